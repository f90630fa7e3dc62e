"""serving: the promoted network behind `mlflow models serve` on 127.0.0.1, asked by the
README's own `curl` command and by a batch of real test digits, answers as the network does."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mixmo_search.promote import promote
from mixmo_search.serving import classify, load_network
from tests.waiting import WaitTimeout, wait_until

README = Path(__file__).resolve().parents[1] / "README.md"
START_S = 180  # mlflow models serve imports the model's code and torch: slow on a busy machine


@pytest.fixture(scope="module")
def champion(search_store, private_store, tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, models:/NAME@champion) of the fixture search's promoted best trial."""
    store = private_store(tmp_path_factory.mktemp("serving-store"))
    return store, promote(search_store.name, tracking_uri=store).model_uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_serving() -> tuple[str, str]:
    """The README's Serving section: its `mlflow models serve` command and its `curl`
    request, its first two bash blocks."""
    text = README.read_text()
    section = text[text.index("## Serving") :]
    section = section[: section.index("\n## ", 3)]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    serve, curl = (block.strip().replace("\\\n", " ") for block in blocks[:2])
    assert "mlflow models serve" in serve and curl.startswith("curl "), blocks
    return serve, curl


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    """`mlflow models serve` as the README writes it, on a free port of 127.0.0.1, with this
    interpreter's bin folder on PATH (where `make run` leaves mlflow and uvicorn)."""
    store, model_uri = champion
    port = free_port()
    serve, _ = readme_serving()
    args = shlex.split(serve)
    args = args[args.index("mlflow") :]  # after the MLFLOW_TRACKING_URI=... of the README
    args[args.index("-m") + 1] = model_uri
    args[args.index("--port") + 1] = str(port)
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--env-manager") + 1] == "local"
    bin_folder = str(Path(sys.executable).parent)
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": store,
             "PATH": f"{bin_folder}:{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until(lambda: _pings(url, process), START_S, f"mlflow models serve at {url}")
        except (WaitTimeout, AssertionError) as stopped:
            log.flush()
            pytest.fail(f"{stopped}:\n{Path(log.name).read_text()}")
        yield url, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def _pings(url: str, process: subprocess.Popen) -> bool:
    """Whether the server answers its /ping now; fails at once if it exited."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
            return response.status == 200
    except OSError:
        assert process.poll() is None, f"mlflow models serve exited ({process.returncode})"
        return False


def test_the_readmes_curl_gets_the_networks_answer(champion, server):
    store, model_uri = champion
    url, _ = server
    _, curl = readme_serving()
    command = re.sub(r"http://127\.0\.0\.1:\d+", url, curl)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (answer,) = json.loads(done.stdout)["predictions"]
    image = json.loads(re.search(r"-d '(.*)'", command, re.S)[1])["inputs"]
    import torch

    network = load_network(model_uri, tracking_uri=store)
    expected = classify(network, torch.tensor(image, dtype=torch.float32)).frame().iloc[0]
    assert answer["class"] == expected["class"] == 7  # the first test digit is a 7
    assert answer["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
    votes = [answer[f"vote_{k}"] for k in range(network.model.n_members)]
    assert votes == [expected[f"vote_{k}"] for k in range(network.model.n_members)]


def test_a_batch_of_test_digits_is_classified_as_the_network_does(champion, server):
    import numpy as np
    import psutil

    store, model_uri = champion
    url, process = server
    network = load_network(model_uri, tracking_uri=store)
    from mixmo_search.datasets import load_dataset

    images = load_dataset(network.config.data).test.images[:32]
    body = json.dumps({"inputs": images.float().numpy().tolist()}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        answers = json.loads(response.read())["predictions"]
    expected = classify(network, images).frame()
    assert [a["class"] for a in answers] == expected["class"].tolist()
    assert np.allclose([a["confidence"] for a in answers], expected["confidence"], atol=1e-6)
    shell = psutil.Process(process.pid)
    ips = {c.laddr.ip for p in [shell, *shell.children(recursive=True)]
           for c in p.net_connections("inet") if c.status == "LISTEN"}  # fmt: skip
    assert ips == {"127.0.0.1"}

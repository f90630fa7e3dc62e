"""infra/ validated offline: every manifest against its schema, plus what the schemas cannot say.

- the Ray cluster-launcher config against the JSON schema shipped inside the installed ray
  package, and through Ray's own config preparation and checks (what `ray up` runs first);
- the KubeRay RayCluster and RayJob against KubeRay's CRD schemas (vendored in infra/schemas,
  made strict), the PersistentVolumeClaim and ConfigMap against Kubernetes' own schemas;
- the Dockerfile with hadolint, the shell scripts with shellcheck;
- then the project's own rules: token authentication everywhere, the pinned versions agree with
  pyproject.toml, the search command is one the CLI accepts, nothing secret is committed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
SCHEMAS = INFRA / "schemas"
BIN = Path(sys.executable).parent  # check-jsonschema, kubernetes-validate, hadolint
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests are checked against
IMAGE_HOME = "/opt/mixmo-search"  # where infra/Dockerfile puts this repository
# any Ray auth mode but token: an env setting, a YAML/JSON value, or a Kubernetes env entry
AUTH_OFF = re.compile(
    r"RAY_AUTH_MODE[\"']?\s*[=:]\s*[\"']?(?!token\b)\w"
    r"|name:\s*RAY_AUTH_MODE\s+value:\s*[\"']?(?!token\b)\w"
)
WILDCARD = re.compile(r"\b0(?:\.0){3}\b")  # the all-interfaces IPv4 address


def _tool(name: str) -> str:
    """A validator's path: from this environment (the dev extra) or, for shellcheck, the OS."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (pip install -e '.[dev]'; shellcheck: apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(found)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=scaled(300))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _pins() -> dict[str, str]:
    """{package: version} of pyproject.toml's exact (==) runtime pins."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def _ray_schema() -> Path:
    import ray.autoscaler

    return Path(ray.autoscaler.__file__).parent / "ray-schema.json"


# ---- the Ray cluster launcher (infra/ray-cluster.yaml) ----


def test_cluster_launcher_config_passes_rays_schema_and_checks():
    done = _run(_tool("check-jsonschema"), "--schemafile", str(_ray_schema()),
                str(INFRA / "ray-cluster.yaml"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_load(INFRA / "ray-cluster.yaml")))  # as `ray up` does


def test_cluster_launcher_scales_gpu_workers_with_token_auth():
    config = _load(INFRA / "ray-cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    assert any(t["resources"].get("GPU", 0) > 0 for t in workers)
    for worker in workers:
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    installs = " ".join(config["setup_commands"])
    assert f"ray[default]=={_pins()['ray']}" in installs  # the head and workers run that Ray
    for command in starts:
        assert not WILDCARD.search(command)  # the dashboard stays on Ray's default, 127.0.0.1


def test_cluster_launcher_commands_pass_shellcheck(tmp_path):
    config = _load(INFRA / "ray-cluster.yaml")
    lists = [key for key in config if key.endswith("_commands")]
    script = tmp_path / "commands.sh"
    script.write_text("\n".join(["#!/usr/bin/env bash", *sum((config[k] for k in lists), [])]))
    # SC1090: ~/mixmo-search.pin is written at setup time, so shellcheck cannot follow it
    done = _run(_tool("shellcheck"), "--exclude=SC1090", str(script))
    assert done.returncode == 0, done.stdout + done.stderr


def test_cluster_launcher_setup_refuses_placeholders(tmp_path):
    pin, guard = _setup_steps("MIXMO_REPO=", "exit 1")
    done = _bash(f"{pin}\n{guard}", home=tmp_path)
    assert done.returncode == 1 and "set MIXMO_REPO, MIXMO_COMMIT" in done.stderr


def test_cluster_launcher_setup_checks_out_the_pinned_commit(tmp_path):
    """The pin, guard and checkout steps, run for real against a clone of this repository."""
    if shutil.which("git") is None or _run("git", "rev-parse", "HEAD").returncode != 0:
        pytest.skip("needs git and a git checkout of this repository")
    commit = _run("git", "rev-parse", "HEAD").stdout.strip()
    origin = tmp_path / "origin.git"
    assert _run("git", "clone", "--quiet", "--bare", str(ROOT), str(origin)).returncode == 0
    pin, guard, checkout = _setup_steps("MIXMO_REPO=", "exit 1", "checkout")
    pin = re.sub(r"https://\S+", origin.as_uri(), pin)
    pin = pin.replace("PUT-THE-40-CHARACTER-COMMIT-SHA-HERE", commit)
    pin = pin.replace("fs-XXXXXXXX.efs", "fs-0123abcd.efs")
    home = tmp_path / "home"
    home.mkdir()
    done = _bash(f"{pin}\n{guard}\n{checkout}", home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    head = _run("git", "-C", str(home / "mixmo-search"), "rev-parse", "HEAD").stdout.strip()
    assert head == commit


def _setup_steps(*needles: str) -> list[str]:
    """The setup commands that contain each needle, in the order asked."""
    commands = _load(INFRA / "ray-cluster.yaml")["setup_commands"]
    steps = []
    for needle in needles:
        (found,) = [c for c in commands if needle in c]
        steps.append(found)
    return steps


def _bash(script: str, *, home: Path) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=scaled(120))  # fmt: skip


# ---- KubeRay and Kubernetes manifests (infra/k8s) ----

KUBERAY = [("raycluster.yaml", "raycluster-v1.json"), ("rayjob.yaml", "rayjob-v1.json")]


@pytest.mark.parametrize(("manifest", "schema"), KUBERAY)
def test_kuberay_manifests_match_the_crd_schemas(manifest, schema):
    done = _run(_tool("check-jsonschema"), "--schemafile", str(SCHEMAS / schema),
                str(K8S / manifest))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_crd_schemas_reject_a_misspelt_field(tmp_path):
    """Strict schemas: a typo fails here instead of being dropped by the API server."""
    cluster = _load(K8S / "raycluster.yaml")
    group = cluster["spec"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    broken = tmp_path / "raycluster.yaml"
    broken.write_text(yaml.safe_dump(cluster))
    done = _run(_tool("check-jsonschema"), "--schemafile", str(SCHEMAS / "raycluster-v1.json"),
                str(broken))  # fmt: skip
    assert done.returncode != 0 and "maxReplica" in done.stdout


def test_core_manifests_match_kubernetes_schemas():
    done = _run(_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION,
                str(K8S / "storage.yaml"), str(K8S / "config.yaml"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_kustomization_lists_existing_files_and_sets_every_image():
    kustomization = _load(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    named = {image["name"] for image in kustomization["images"]}
    for resource in kustomization["resources"]:
        for container in _containers(_load(K8S / resource)):
            assert container["image"] in named, container["name"]


def test_the_ray_cluster_uses_token_auth_the_image_and_the_shared_volume():
    cluster = _load(K8S / "raycluster.yaml")
    spec = cluster["spec"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "mixmo-ray-token"}
    assert spec["rayVersion"] == _pins()["ray"]
    claim = _load(K8S / "storage.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert claims[mounts["/mnt/shared"]] == claim["metadata"]["name"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert not any(e.get("value") for e in container.get("env", [])
                       if re.search("TOKEN|PASSWORD|SECRET", e["name"]))  # fmt: skip
    (worker,) = spec["workerGroupSpecs"]
    gpus = worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert int(gpus) > 0 and worker["minReplicas"] <= worker["maxReplicas"]


def test_the_drivers_mlflow_login_comes_from_a_secret_on_the_head_only():
    """The driver (on the head) signs in to MLflow with a Secret's keys; the trials' workers
    never talk to MLflow and get no login; the ConfigMap holds the server's URI, no login."""
    from mixmo_search import tracking

    spec = _load(K8S / "raycluster.yaml")["spec"]
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    env = {entry["name"]: entry for entry in head["env"]}
    for name, key in (("MLFLOW_TRACKING_USERNAME", "username"),
                      ("MLFLOW_TRACKING_PASSWORD", "password")):  # fmt: skip
        assert env[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "mixmo-mlflow-login", "key": key}},
        }
    for group in spec["workerGroupSpecs"]:
        for container in _containers(group):
            names = [e["name"] for e in container.get("env", [])]
            assert not [n for n in names if n.startswith("MLFLOW_TRACKING_")], names
    settings = _load(K8S / "config.yaml")["data"]
    assert not [k for k in settings if re.search("USER|PASSWORD|TOKEN|SECRET", k)]
    tracking.check_store(settings["MLFLOW_TRACKING_URI"])  # refuses a URI with a login in it


@pytest.mark.slow
def test_the_ray_job_runs_a_search_the_cli_accepts(tmp_path):
    """The RayJob's entrypoint, through the real CLI's --dry-run (it starts nothing)."""
    job, cluster = _load(K8S / "rayjob.yaml"), _load(K8S / "raycluster.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "mixmo_search.tune"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    (worker,) = cluster["spec"]["workerGroupSpecs"]
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert float(options["--gpus"]) == worker["maxReplicas"] * int(limits["nvidia.com/gpu"])
    assert options["--storage"].startswith("/mnt/shared/")
    space = ROOT / Path(options["--space"]).relative_to(IMAGE_HOME)
    assert space.is_file()
    argv[argv.index("--space") + 1] = str(space)
    argv[argv.index("--storage") + 1] = str(tmp_path / "searches")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": _load(K8S / "config.yaml")["data"]["MLFLOW_TRACKING_URI"],
    }
    done = subprocess.run([sys.executable, *argv[1:], "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=scaled(120))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    trials_at_once = int(options["--gpus"].split(".")[0])  # 1 GPU a trial in the space
    assert f"up to {trials_at_once} at a time" in done.stdout
    assert not (tmp_path / "searches").exists()


def _containers(manifest: dict) -> list[dict]:
    """Every container (and init container) anywhere in a manifest."""
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers"):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(manifest)
    return found


# ---- the worker image, the scripts, the cluster space ----


def test_dockerfile_passes_hadolint():
    done = _run(_tool("hadolint"), str(INFRA / "Dockerfile"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_as_non_root_with_the_pinned_ray_and_no_secrets():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+$", text, re.MULTILINE)
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"  # numeric: runAsNonRoot
    assert f'"ray[default]=={_pins()["ray"]}"' in text
    for line in re.findall(r"^(?:ARG|ENV)\s.*$", text, re.MULTILINE):
        assert not re.search(r"TOKEN|PASSWORD|SECRET|AWS_|KEY", line), line
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "mlflow.db", "mlartifacts", "runs", "data"} <= set(ignored)


def test_shell_scripts_pass_shellcheck():
    scripts = sorted(INFRA.glob("*.sh"))
    done = _run(_tool("shellcheck"), *map(str, scripts))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", ["ray-head.sh", "ray-worker.sh"])
def test_ray_scripts_refuse_to_start_without_a_token(script, tmp_path):
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "RAY_HEAD": "127.0.0.1:6379"}
    done = subprocess.run(["bash", str(INFRA / script)], env=env, capture_output=True,
                          text=True, timeout=scaled(30))  # fmt: skip
    assert done.returncode == 2 and "no Ray token" in done.stderr


def test_nothing_in_infra_turns_ray_auth_off_or_listens_everywhere_by_default():
    for path in INFRA.rglob("*"):
        if path.is_file() and path.suffix != ".json":
            text = path.read_text()
            assert not AUTH_OFF.search(text), path
            assert not re.search(r"(HOST|host)[=:-]+\s*\"?" + WILDCARD.pattern, text), path


def test_the_cluster_space_is_cutmix_with_shared_data():
    from mixmo_search.search.space import load_space

    cluster = load_space(INFRA / "spaces" / "cutmix-cluster.yaml")
    shipped = load_space(ROOT / "search_spaces" / "cutmix.yaml")
    assert cluster.overrides == {
        **shipped.overrides, "data.root": "/mnt/shared/data", "data.download": False,
    }  # fmt: skip
    for field in ("name", "preset", "params", "objectives", "sampler", "scheduler", "budget",
                  "resources"):  # fmt: skip
        assert getattr(cluster, field) == getattr(shipped, field), field


def test_vendored_schemas_name_their_source_and_licence():
    notes = (SCHEMAS / "README.md").read_text()
    for schema in SCHEMAS.glob("*.json"):
        assert schema.name in notes
    assert "Apache" in notes and "ray-project/kuberay" in notes

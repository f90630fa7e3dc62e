"""Promote: register a finished trial of the search under a model alias, after confirmation.

The same code path as `python -m mixmo_search.promote`: `plan_promotion` checks the request
and says what would happen (and whether the alias holder is better); `promote` runs only
after the confirmation box is ticked, before the plan is drawn, so the page shows the alias's
new holder right after a promotion.
"""

from __future__ import annotations

import streamlit as st

from app import queries, state
from mixmo_search import tracking, tracking_auth
from mixmo_search.errors import UserError
from mixmo_search.promote import POLICIES, plan_promotion, promote

BY_POLICY = "the policy's choice"

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header(f"Promote a trial of {search.name}")
finished = trials[trials["status"] == "finished"] if not trials.empty else trials
if finished.empty:
    st.info("No trial has finished yet: only finished trials keep a checkpoint to promote.")
    st.stop()

left, right = st.columns(2)
policy = left.selectbox(
    "Policy (validation metrics only)",
    list(POLICIES),
    format_func=lambda name: f"{name}: {POLICIES[name].help}",
    key=f"{search.run_id}-promote-policy",
)
trial = right.selectbox(
    "Trial",
    [BY_POLICY, *sorted(finished["trial_id"])],
    key=f"{search.run_id}-promote-trial",
    help="another finished trial instead of the policy's; the policy still decides whether "
    "it beats the alias holder",
)
min_acc = None
if policy == "best-diversity":
    min_acc = left.number_input("Minimum val/acc", 0.0, 1.0, value=0.9, step=0.01)
alias = left.text_input("Alias", "champion", key=f"{search.run_id}-promote-alias")
model_name = right.text_input(
    "Registered model", f"mixmo-{search.name}", key=f"{search.run_id}-promote-model"
)
request = dict(
    policy=policy,
    alias=alias,
    model_name=model_name,
    trial=None if trial == BY_POLICY else trial,
    min_acc=min_acc,
    tracking_uri=search.uri,
    experiment=st.session_state.get("experiment", tracking.EXPERIMENT),  # the sidebar's
    record=trials,  # the record every page reads, not read again
)
confirm_key, go_key = f"{search.run_id}-promote-confirm", f"{search.run_id}-promote-go"
force_key = f"{search.run_id}-promote-force"
if st.session_state.pop(go_key, False):  # the Promote button was clicked on the last run
    try:
        with st.spinner("Re-evaluating on the test split, logging and registering the model"):
            result = promote(search.name, force=st.session_state.get(force_key, False), **request)
    except UserError as err:
        st.error(str(err), icon="⚠️")
    else:
        for warning in result.warnings:
            st.warning(warning, icon="⚠️")
        load = (
            f"Load it with `python -m mixmo_search.predict --model {result.model_uri} "
            f"--mlflow-uri {search.uri} --images DIR`, or serve it (README: Serving)."
        )
        if result.again:  # promoted before: no new version
            st.info(f"{result.again[0].upper()}{result.again[1:]}. {load}")
        else:
            was = (
                f", replacing version {result.replaced_version}" if result.replaced_version else ""
            )
            st.success(
                f"{result.model_name} version {result.version} now holds @{result.alias}{was} "
                f"(test/acc re-evaluated {result.test_acc_measured:.4f}, trainer "
                f"{result.test_acc_logged:.4f}). {load}"
            )

try:
    plan = plan_promotion(search.name, **request)  # after any promotion: the current holder
except UserError as err:
    st.error(str(err), icon="⚠️")
    st.stop()

shown = {**plan.trial.val, **plan.trial.test}
metrics = ", ".join(
    f"{k} {queries.shown_number(k, shown[k])}" for k in queries.KEY_METRICS if k in shown
)
trial_name, model = f"**Trial {plan.trial.trial_id}**", f"**{plan.model_name}**"
holds = plan.holder is not None and plan.holder.version == plan.registered
if plan.registered is None:
    st.markdown(f"{trial_name} would become a new version of {model} and take "
                f"**@{plan.alias}**: {metrics}")  # fmt: skip
elif holds:
    st.markdown(f"{trial_name} is version {plan.registered} of {model} and holds "
                f"**@{plan.alias}**: promoting it again changes nothing. {metrics}")  # fmt: skip
else:
    st.markdown(f"{trial_name} is already version {plan.registered} of {model}: promoting it "
                f"moves **@{plan.alias}** there, with no new version. {metrics}")  # fmt: skip
if plan.holder is None:
    st.caption(f"No version of {plan.model_name} holds @{plan.alias} yet.")
elif not holds:
    holder = plan.holder
    st.caption(f"@{plan.alias} is now on version {holder.version} (trial {holder.trial_id}).")
blocked = holds
try:  # the dashboard's login may read but not promote
    tracking_auth.check_promotion(
        tracking.connect_existing(search.uri), plan.experiment_id, plan.model_name
    )
except UserError as err:
    st.error(str(err), icon="🔒")
    blocked = True
if plan.refusal and not holds:
    st.warning(plan.refusal, icon="⚠️")
    blocked = not st.checkbox("Replace it anyway (--force)", key=force_key)
confirmed = st.checkbox(
    f"Re-evaluate trial {plan.trial.trial_id} on the test split, register it and move "
    f"@{plan.alias}",
    key=confirm_key,
)


def _clicked() -> None:
    # one confirmation, one promotion: untick before the rerun that promotes
    st.session_state[confirm_key] = False
    st.session_state[go_key] = True


st.button("Promote", type="primary", disabled=not confirmed or blocked, on_click=_clicked)

"""Filters of the pi_kiosk role: the kiosk's configuration, the memory fit, and what each entry point reports.

Kept here in Python (tested in tests/test_pi_kiosk_filters.py) rather than in Jinja: they are decisions and
sentences built from the modules' results. A result that was skipped, or never registered, arrives as {} or as a
skipped result; "changed" is read as Ansible's `is changed` test reads it."""
from __future__ import annotations

import math
import os
from typing import Any

Result = dict[str, Any]
CHECK_MODE = "(check mode, nothing changed) "


def _changed(result: Result | None) -> bool:
    return bool((result or {}).get("changed"))


def _live_release(facts: Result | None) -> str | None:
    """The live release the Pi's deployment read found (pi_kiosk_facts), or None."""
    state = (facts or {}).get("state") or {}
    return (state.get("live") or {}).get("release")


def pi_kiosk_config(settings: dict[str, dict[str, Any]], *, model_path: str, model_sha256: str, card: str,
                    threads: int | str, cache_dir: str, coral_backend: bool | str, coral_model_path: str,
                    server_url: str, token_file: str, camera: dict[str, Any], metrics_port: int | str,
                    state_dir: str, heartbeat_seconds: float | str) -> dict[str, dict[str, Any]]:
    """config.toml as sections: the role's settings, then pi_kiosk_settings over them (section by section, key by key).

    card: the model's card, a built-in card's name or the path of its card file on the Pi (embedder.card).
    With coral_backend, the Edge TPU model (coral_model_path) runs the embedding."""
    embedder: dict[str, Any] = {"model_path": model_path, "model_sha256": model_sha256, "card": card,
                                "threads": int(threads), "cache_dir": cache_dir}
    if _bool(coral_backend):
        embedder |= {"backend": "coral", "coral_model_path": coral_model_path}
    config: dict[str, dict[str, Any]] = {
        "embedder": embedder,
        "server": {"url": server_url, "token_file": token_file},
        "camera": {"source": str(camera["source"]), "width": int(camera["width"]), "height": int(camera["height"]),
                   "max_fps": float(camera["max_fps"]), "loop": _bool(camera["loop"])},
        "metrics": {"host": "127.0.0.1", "port": int(metrics_port)},
        "outbox": {"path": f"{state_dir}/outbox.sqlite3"},
        "sync": {"cache_path": f"{state_dir}/gallery.npz", "enrolled_path": f"{state_dir}/enrolled.npz"},
        "heartbeat": {"interval_seconds": float(heartbeat_seconds)},
    }
    for section, keys in settings.items():
        config[section] = {**config.get(section, {}), **keys}
    return config


def _bool(value: Any) -> bool:
    """As Ansible's `| bool` reads an input: yes/true/on/1 are true."""
    if isinstance(value, str):
        return value.strip().lower() in {"yes", "y", "true", "t", "on", "1"}
    return bool(value)


def pi_kiosk_memory_fit(model_bytes: int, *, ram_mb: int | str, swap_mb: int | str, reserve_mb: int | str,
                        max_mb: int | str, baseline_mb: float, factor: float, beside_mb: int | str = 0
                        ) -> dict[str, Any]:
    """Whether a model fits the board: the service's peak (baseline + factor x the model) against the service's
    memory limit, and with what runs beside it (beside_mb: the live service, while the smoke test starts the candidate)
    against the board's RAM + swap - the reserve; the largest model that would fit."""
    model_mb = model_bytes / 1048576
    need = round(baseline_mb + model_mb * factor)
    beside = int(beside_mb)
    have = int(ram_mb) + int(swap_mb) - int(reserve_mb) - beside
    return {"model_mb": round(model_mb, 1), "need": need, "have": have, "beside": beside,
            "fits": need <= have and need <= int(max_mb), "short": max(need - have, need - int(max_mb)),
            "max_model_mb": round((min(have, int(max_mb)) - baseline_mb) / factor, 1)}


def pi_kiosk_install_mb(plan: Result, *, model_files: list[Result], models: list[Result], facts: Result, release: str,
                        release_mb: int | str) -> int:
    """The disk a deploy takes on the Pi, in MB: the wheels it sends (twice: the tar, and the cache they are taken
    into before the tar goes), the release unless the Pi has it complete, and the models the Pi lacks."""
    wheels = int((plan.get("transfer") or {}).get("bytes", 0)) * 2
    wanted = {m["name"] for m in models} - set(facts.get("models") or [])
    model_bytes = sum(int(f["stat"]["size"]) for f in model_files if f["item"]["name"] in wanted)
    build = 0 if release in (facts.get("releases") or []) else int(release_mb)
    return math.ceil((wheels + model_bytes) / 1048576) + build


def _health_text(health: Result | None, probe: Result | None, window: int | str) -> str:
    """What the gate saw of the kiosk, or what a run that restarted nothing read (the probe)."""
    health, probe = health or {}, probe or {}
    if "ready_seconds" in health:
        healthz = health.get("healthz") or {}
        return (f"healthy: ready in {health['ready_seconds']} s, {health['fps']} frames/s over {window} s, "
                f"version {healthz.get('version', '?')}, {healthz.get('threads', '?')} threads")
    # The probe's healthz is /healthz's JSON, or its text when it answered something else.
    healthz = probe.get("healthz")
    status = healthz.get("status") if isinstance(healthz, dict) and "status" in healthz else probe.get(
        "healthz_status", "not checked")
    return f"service {probe.get('active', 'not checked')}, /healthz {status}"


def _sent_text(plan: Result | None, models_sent: Result | None) -> str:
    """The bytes a deploy sent the Pi."""
    transfer = (plan or {}).get("transfer") or {}
    if transfer.get("count", 0) > 0:
        sent = (f"sent {transfer['count']} wheel(s), {transfer['bytes']} bytes (the release has "
                f"{len((plan or {})['wheels'])} wheels, {(plan or {})['total_bytes']} bytes)")
    else:
        sent = "sent no wheels (0 bytes: the Pi had them all)"
    return sent + (", model sent" if _changed(models_sent) else "")


def pi_kiosk_deploy_report(results: dict[str, Result | None], *, host: str, release: str, check_mode: bool,
                           model_src: str, model_sha256: str, coral_backend: bool | str, coral_model_sha256: str,
                           window: int | str) -> dict[str, Any]:
    """The deploy's outcome for the rollout's report (pi_kiosk_outcome) and its last line.

    results: the registered results of the deploy (switch, health, probe, plan, models_sent, built, commit);
    coral_backend: whether the Edge TPU model (coral_model_sha256) runs."""
    switch, health, built, commit = (results.get(k) or {} for k in ("switch", "health", "built", "commit"))
    did = "deployed now" if _changed(switch) else "restarted" if _changed(health) else "unchanged"
    sent = _sent_text(results.get("plan"), results.get("models_sent"))
    health_text = _health_text(health, results.get("probe"), window)
    damaged = built.get("damaged") or []
    repaired = f"found damaged ({damaged[0]}{', ...' if len(damaged) > 1 else ''}), " if damaged else ""
    if not built.get("built"):
        built_text = ""
    elif "build_seconds" in built:
        built_text = f"release {repaired}built again in {built['build_seconds']} s; " if damaged else \
            f"release built in {built['build_seconds']} s; "
    else:
        built_text = f"release {repaired}to be built; "
    pruned = [name for name, removed in (commit.get("pruned") or {}).items() if removed]
    coral = f", Edge TPU model {coral_model_sha256[:12]}" if _bool(coral_backend) else ""
    files = ", ".join(switch.get("changed_files") or []) or "unchanged"
    message = (f"{CHECK_MODE if check_mode else ''}{host}: release {release} {did}; model {model_sha256[:12]} "
               f"({os.path.basename(model_src)}){coral}; {sent}; {built_text}files {files}; "
               f"{health_text}{'; pruned ' + ', '.join(pruned) if pruned else ''}.")
    outcome = {"outcome": "unchanged" if did == "unchanged" else "deployed", "release": release, "live": release,
               "detail": f"{did}; {sent}; {health_text}"}
    return {"outcome": outcome, "message": message}


def pi_kiosk_fallback_report(results: dict[str, Result | None], *, host: str, release: str,
                             failure: dict[str, str]) -> dict[str, Any]:
    """What a candidate that failed its gate left live, for the report (pi_kiosk_outcome) and the host's failure.

    results: compare (the candidate against the live deployment), switch, rollback, rollback_health, facts."""
    compare, switch, rollback, rollback_health = (results.get(k) or {}
                                                  for k in ("compare", "switch", "rollback", "rollback_health"))
    rolled_back = _changed(rollback)
    before = _live_release(results.get("facts"))
    switched, part_way, ungated = _changed(switch), bool(switch.get("failed")), bool(compare.get("uncommitted"))
    touched = switched or part_way or ungated
    if rolled_back:
        live: str | None = rollback["deployment"]["release"]
    else:
        live = None if touched else before
    message = f"{host}: release {release} FAILED its {failure['phase']}: {failure['reason']}."
    if part_way:
        message += " The switch to it failed part way (some of its files or its release may have been live)."
    elif ungated and not switched:
        message += " It went live in an earlier run that never finished its gate (power or SSH lost)."
    if not touched and not _changed(compare):
        message += " It is the live deployment, and it does not run healthy."
    elif not touched:
        message += f" It never went live: the live deployment ({before or 'none'}) was not touched."
    elif rolled_back:
        verdict = ("healthy again" if "ready_seconds" in rollback_health
                   else f"NOT healthy either ({rollback_health.get('msg', '')})")
        message += f" ROLLED BACK to {live}, which is {verdict}."
    else:
        message += (f" There is no earlier good deployment to go back to ({rollback.get('msg', '')}): "
                    "the kiosk service is stopped.")
    outcome = {"outcome": "rolled back" if rolled_back else "failed", "release": release, "live": live,
               "phase": failure["phase"], "reason": failure["reason"]}
    return {"outcome": outcome, "message": message}


def pi_kiosk_rollback_report(rollback: Result, health: Result | None, *, host: str, check_mode: bool) -> str:
    """The last line of playbooks/rollback.yml on one kiosk."""
    target = rollback["deployment"]["release"]
    if _changed(rollback):
        moved = f"rolled back from {(rollback.get('previous') or {}).get('release', 'none')} to {target}"
    else:
        moved = f"already on {target}"
    health = health or {}
    gate = (f", healthy: ready in {health['ready_seconds']} s, {health['fps']} frames/s"
            if "ready_seconds" in health else "")
    return f"{CHECK_MODE if check_mode else ''}{host}: {moved}{gate}."


def pi_kiosk_health_report(health: Result | None, failure: dict[str, str] | None, *, host: str, context: str,
                           outcome: str, window: int | str) -> dict[str, Any]:
    """The health entry point's outcome for the rollout's report and its message: healthy (what changed before, then
    the kiosk as the gate saw it, or no kiosk at all), or not (the gate's phase and reason: the host fails)."""
    if failure:
        return {"outcome": {"outcome": "failed", "phase": failure["phase"], "reason": failure["reason"]},
                "message": (f"{host}: the kiosk is NOT healthy{' ' + context if context else ''}. "
                            f"{failure['phase']}: {failure['reason']}.")}
    seen = ("no kiosk installed" if (health or {}).get("installed", True) is False
            else "kiosk " + _health_text(health, None, window))
    detail = f"{context}; {seen}" if context else seen
    return {"outcome": {"outcome": outcome, "detail": detail}, "message": f"{host}: {outcome}; {detail}."}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {f.__name__: f for f in (pi_kiosk_config, pi_kiosk_memory_fit, pi_kiosk_install_mb,
                                        pi_kiosk_deploy_report, pi_kiosk_fallback_report, pi_kiosk_rollback_report,
                                        pi_kiosk_health_report)}

"""What the pi_kiosk role decides and says (plugins/filter/pi_kiosk.py): the kiosk's configuration,
the memory fit, and each entry point's outcome and report line, for every branch."""
from __future__ import annotations

from typing import Any

import pytest

from conftest import ROOT, load_module

kiosk = load_module(ROOT / "plugins/filter/pi_kiosk.py")

CONFIG_INPUTS: dict[str, Any] = {
    "model_path": "/opt/pi-kiosk/models/ab.onnx", "model_sha256": "ab" * 32, "card": "arcface", "threads": "4",
    "cache_dir": "/var/cache/pi-kiosk", "coral_backend": False, "coral_model_path": "/opt/pi-kiosk/models/",
    "server_url": "https://attendance.example.com", "token_file": "/etc/pi-kiosk/token",
    "camera": {"source": 0, "width": "640", "height": 480, "max_fps": "10", "loop": "yes"},
    "metrics_port": "9108", "state_dir": "/var/lib/pi-kiosk", "heartbeat_seconds": "60",
}
HEALTHY = {"changed": True, "ready_seconds": 4.8, "fps": 0.07, "healthz": {"version": "0.2.0", "threads": 4}}
HEALTHY_TEXT = "healthy: ready in 4.8 s, 0.07 frames/s over 30 s, version 0.2.0, 4 threads"
PLAN = {"transfer": {"count": 17, "bytes": 87920640}, "wheels": [{}] * 17, "total_bytes": 87888694}
MODEL = {"model_src": "http://127.0.0.1:8799/mobilefacenet-pi4.onnx", "model_sha256": "c12577f42026" + "0" * 52,
         "coral_backend": False, "coral_model_sha256": "", "window": 30}


def test_the_configuration_has_every_section_with_typed_values() -> None:
    config = kiosk.pi_kiosk_config({}, **CONFIG_INPUTS)
    assert config == {
        "embedder": {"model_path": "/opt/pi-kiosk/models/ab.onnx", "model_sha256": "ab" * 32, "card": "arcface",
                     "threads": 4, "cache_dir": "/var/cache/pi-kiosk"},
        "server": {"url": "https://attendance.example.com", "token_file": "/etc/pi-kiosk/token"},
        # A camera index from the inventory is a string to the kiosk; "yes" is a boolean, as `| bool` reads it.
        "camera": {"source": "0", "width": 640, "height": 480, "max_fps": 10.0, "loop": True},
        "metrics": {"host": "127.0.0.1", "port": 9108},
        "outbox": {"path": "/var/lib/pi-kiosk/outbox.sqlite3"},
        "sync": {"cache_path": "/var/lib/pi-kiosk/gallery.npz", "enrolled_path": "/var/lib/pi-kiosk/enrolled.npz"},
        "heartbeat": {"interval_seconds": 60.0},
    }


def test_the_edge_tpu_model_runs_only_with_the_coral_backend() -> None:
    coral = {**CONFIG_INPUTS, "coral_backend": "True", "coral_model_path": "/opt/pi-kiosk/models/cd.tflite"}
    assert kiosk.pi_kiosk_config({}, **coral)["embedder"] == {
        "model_path": "/opt/pi-kiosk/models/ab.onnx", "model_sha256": "ab" * 32, "card": "arcface", "threads": 4,
        "cache_dir": "/var/cache/pi-kiosk", "backend": "coral",
        "coral_model_path": "/opt/pi-kiosk/models/cd.tflite"}
    assert "backend" not in kiosk.pi_kiosk_config({}, **CONFIG_INPUTS)["embedder"]


def test_a_card_file_is_named_by_its_path_on_the_pi() -> None:
    card = "/opt/pi-kiosk/models/" + "cd" * 32 + ".toml"
    assert kiosk.pi_kiosk_config({}, **{**CONFIG_INPUTS, "card": card})["embedder"]["card"] == card


def test_settings_override_key_by_key_and_add_sections() -> None:
    config = kiosk.pi_kiosk_config({"matching": {"threshold": 0.45}, "camera": {"max_fps": 0.05}}, **CONFIG_INPUTS)
    assert config["matching"] == {"threshold": 0.45}
    # The other camera keys stay the role's.
    assert config["camera"] == {"source": "0", "width": 640, "height": 480, "max_fps": 0.05, "loop": True}


@pytest.mark.parametrize(("size_mb", "ram", "swap", "reserve", "max_mb", "expected"), [
    # 175 + 4.5 x 4.7 = 196 MB on a Pi Zero 2 W (512 RAM + 2048 swap - 128): fits.
    (4.7, 512, 2048, 128, 1024, {"model_mb": 4.7, "need": 196, "have": 2432, "fits": True, "short": -828,
                                 "max_model_mb": 188.7, "beside": 0}),
    # A ResNet-50-sized model (166.5 MB) needs 924 MB: short of a 512 MB board without swap, by 540 MB.
    (166.5, 512, 0, 128, 1024, {"model_mb": 166.5, "need": 924, "have": 384, "fits": False, "short": 540,
                                "max_model_mb": 46.4, "beside": 0}),
    # The default model, dlib's ResNet converted (22,438,267 bytes: 21.4 MB): 271 MB, within every example board's
    # limit (inventory/example: Pi 4 1536 MB, Pi 3 640 MB, Pi Zero 2 W 384 MB) and memory (here a Pi Zero 2 W's).
    (22438267 / 1048576, 512, 2048, 128, 384, {"model_mb": 21.4, "need": 271, "have": 2432, "fits": True, "short": -113,
                                               "max_model_mb": 46.4, "beside": 0}),
    # Enough RAM, but the service's own limit is lower.
    (166.5, 4096, 0, 128, 512, {"model_mb": 166.5, "need": 924, "have": 3968, "fits": False, "short": 412,
                                "max_model_mb": 74.9, "beside": 0}),
])
def test_the_memory_fit_counts_ram_swap_the_reserve_and_the_service_limit(
        size_mb: float, ram: int, swap: int, reserve: int, max_mb: int, expected: dict[str, Any]) -> None:
    fit = kiosk.pi_kiosk_memory_fit(round(size_mb * 1048576), ram_mb=str(ram), swap_mb=swap, reserve_mb=reserve,
                                    max_mb=max_mb, baseline_mb=175, factor=4.5)
    assert fit == expected


def test_the_smoke_test_counts_the_live_service_it_runs_beside() -> None:
    """Issue 27: the smoke test's first start peaks while the live service still runs: a board that fits either alone
    may not fit both (a Pi 3's 1 GB without swap: 924 MB for a ResNet-50-sized candidate, 300 MB live)."""
    alone = kiosk.pi_kiosk_memory_fit(round(166.5 * 1048576), ram_mb=1024, swap_mb=0, reserve_mb=64, max_mb=1024,
                                      baseline_mb=175, factor=4.5)
    beside = kiosk.pi_kiosk_memory_fit(round(166.5 * 1048576), ram_mb=1024, swap_mb=0, reserve_mb=64, max_mb=1024,
                                       baseline_mb=175, factor=4.5, beside_mb="300")
    assert alone["fits"] and not beside["fits"]
    assert (beside["have"], beside["short"], beside["beside"]) == (660, 264, 300)


def test_every_install_counts_the_disk_it_takes() -> None:
    """Issue 27: the free-space check ran only before a Pi's first release; every install is counted now."""
    model = {"name": "ab.onnx", "sha256": "ab"}
    files = [{"item": model, "stat": {"size": 22 * 1048576}}, {"item": {"name": "cd.onnx"}, "stat": {"size": 10 ** 9}}]
    facts = {"releases": ["0.2.0-old"], "models": []}
    plan = {"transfer": {"bytes": 30 * 1048576}}
    need = kiosk.pi_kiosk_install_mb(plan, model_files=files, models=[model], facts=facts, release="0.2.0-new",
                                     release_mb=350)
    assert need == 30 * 2 + 22 + 350
    # A configuration run: the release and the model are there, nothing is sent.
    assert kiosk.pi_kiosk_install_mb({}, model_files=files, models=[model], release="0.2.0-old", release_mb=350,
                                     facts={"releases": ["0.2.0-old"], "models": ["ab.onnx"]}) == 0


def test_a_deploy_says_what_it_sent_built_switched_and_pruned() -> None:
    results = {"switch": {"changed": True, "changed_files": ["/etc/pi-kiosk/config.toml", "/etc/pi-kiosk/token"]},
               "health": HEALTHY, "probe": {"skipped": True}, "plan": PLAN, "models_sent": {"changed": True},
               "built": {"built": True, "build_seconds": 24.2},
               "commit": {"pruned": {"0.1.0-aaaa": True, "0.1.1-bbbb": False}}}
    report = kiosk.pi_kiosk_deploy_report(results, host="pi4", release="0.2.0-11ccb633dd26", check_mode=False, **MODEL)
    sent = ("sent 17 wheel(s), 87920640 bytes (the release has 17 wheels, 87888694 bytes), model sent")
    assert report["outcome"] == {"outcome": "deployed", "release": "0.2.0-11ccb633dd26", "live": "0.2.0-11ccb633dd26",
                                 "detail": f"deployed now; {sent}; {HEALTHY_TEXT}"}
    assert report["message"] == (
        f"pi4: release 0.2.0-11ccb633dd26 deployed now; model c12577f42026 (mobilefacenet-pi4.onnx); {sent}; "
        f"release built in 24.2 s; files /etc/pi-kiosk/config.toml, /etc/pi-kiosk/token; {HEALTHY_TEXT}; "
        "pruned 0.1.0-aaaa.")


def test_an_unchanged_deploy_says_what_the_probe_read() -> None:
    # A configuration-only run (--tags recognizer_config): no plan, nothing built, nothing switched.
    results = {"switch": {}, "health": {}, "probe": {"active": "active", "healthz": {"status": "ok"}},
               "models_sent": {"changed": False}, "built": {}, "commit": {}}
    report = kiosk.pi_kiosk_deploy_report(results, host="pi3", release="0.2.0-c1", check_mode=False, **MODEL)
    assert report["outcome"]["outcome"] == "unchanged"
    assert report["message"] == ("pi3: release 0.2.0-c1 unchanged; model c12577f42026 (mobilefacenet-pi4.onnx); "
                                 "sent no wheels (0 bytes: the Pi had them all); files unchanged; "
                                 "service active, /healthz ok.")


def test_the_default_model_is_named_by_its_card() -> None:
    results = {"switch": {}, "health": {}, "probe": {"active": "active", "healthz": {"status": "ok"}}}
    default = {**MODEL, "model_src": "dlib-resnet-v1 (the default model)", "model_sha256": "6a64a97a1804" + "0" * 52}
    report = kiosk.pi_kiosk_deploy_report(results, host="pi3", release="0.2.0-c1", check_mode=False, **default)
    assert report["message"].startswith(
        "pi3: release 0.2.0-c1 unchanged; model 6a64a97a1804 (dlib-resnet-v1 (the default model)); ")


def test_a_healthz_that_answered_no_json_reads_as_its_status() -> None:
    results = {"probe": {"active": "active", "healthz": "Internal Server Error", "healthz_status": 500}}
    report = kiosk.pi_kiosk_deploy_report(results, host="pi3", release="0.2.0-c1", check_mode=False, **MODEL)
    assert report["outcome"]["detail"].endswith("; service active, /healthz 500")


def test_a_restart_with_the_live_release_counts_as_deployed() -> None:
    results = {"switch": {"changed": False}, "health": HEALTHY}
    report = kiosk.pi_kiosk_deploy_report(results, host="pi3", release="0.2.0-c1", check_mode=False, **MODEL)
    assert report["outcome"]["outcome"] == "deployed" and report["outcome"]["detail"].startswith("restarted; ")


def test_check_mode_and_the_edge_tpu_model_are_named() -> None:
    results = {"switch": {"changed": True}, "probe": {"healthz_status": "unreachable"},
               "built": {"built": True}}
    coral = {**MODEL, "coral_backend": "True", "coral_model_sha256": "ef" * 32}
    message = kiosk.pi_kiosk_deploy_report(results, host="pi4", release="0.2.0-x", check_mode=True, **coral)["message"]
    assert message == ("(check mode, nothing changed) pi4: release 0.2.0-x deployed now; model c12577f42026 "
                       "(mobilefacenet-pi4.onnx), Edge TPU model efefefefefef; sent no wheels (0 bytes: the Pi had "
                       "them all); release to be built; files unchanged; service not checked, /healthz unreachable.")


FAILURE = {"phase": "health", "reason": "no frames for 30 s"}
LIVE = {"state": {"live": {"release": "0.1.0-old"}}}


@pytest.mark.parametrize(("results", "outcome", "live", "says"), [
    # The candidate was the live deployment already: nothing to go back to, it just does not run healthy.
    ({"compare": {"changed": False}, "facts": LIVE}, "failed", "0.1.0-old",
     "It is the live deployment, and it does not run healthy."),
    # The smoke test failed before the switch.
    ({"compare": {"changed": True}, "switch": {}, "rollback": {"skipped": True}, "facts": LIVE}, "failed", "0.1.0-old",
     "It never went live: the live deployment (0.1.0-old) was not touched."),
    ({"compare": {"changed": True}, "switch": {}, "rollback": {"skipped": True}, "facts": {}}, "failed", None,
     "It never went live: the live deployment (none) was not touched."),
    ({"compare": {"changed": True}, "switch": {"changed": True}, "facts": LIVE,
      "rollback": {"changed": True, "deployment": {"release": "0.1.0-old"}}, "rollback_health": HEALTHY},
     "rolled back", "0.1.0-old", "ROLLED BACK to 0.1.0-old, which is healthy again."),
    ({"compare": {"changed": True}, "switch": {"changed": True}, "facts": LIVE,
      "rollback": {"changed": True, "deployment": {"release": "0.1.0-old"}},
      "rollback_health": {"failed": True, "msg": "not ready in 400 s"}},
     "rolled back", "0.1.0-old", "ROLLED BACK to 0.1.0-old, which is NOT healthy either (not ready in 400 s)."),
    # Issue 27: the live deployment went live in a run that never gated it (SSH lost after the switch): rolled back.
    ({"compare": {"changed": False, "uncommitted": True}, "facts": LIVE,
      "rollback": {"changed": True, "deployment": {"release": "0.1.0-good"}}, "rollback_health": HEALTHY},
     "rolled back", "0.1.0-good", "It went live in an earlier run that never finished its gate (power or SSH lost). "
     "ROLLED BACK to 0.1.0-good, which is healthy again."),
    # A switch that failed part way touched the live files: said, and rolled back.
    ({"compare": {"changed": True}, "switch": {"failed": True, "msg": "No space left"}, "facts": LIVE,
      "rollback": {"changed": True, "deployment": {"release": "0.1.0-old"}}, "rollback_health": HEALTHY},
     "rolled back", "0.1.0-old", "The switch to it failed part way (some of its files or its release may have been "
     "live). ROLLED BACK to 0.1.0-old, which is healthy again."),
    # The first release of a Pi failed after its switch: nothing committed to go back to.
    ({"compare": {"changed": True}, "switch": {"changed": True}, "facts": {},
      "rollback": {"changed": False, "msg": "no committed deployment"}}, "failed", None,
     "There is no earlier good deployment to go back to (no committed deployment): the kiosk service is stopped."),
])
def test_a_failed_gate_says_what_was_touched(results: dict[str, Any], outcome: str, live: str | None,
                                             says: str) -> None:
    report = kiosk.pi_kiosk_fallback_report(results, host="pi4", release="0.2.0-new", failure=FAILURE)
    assert report["outcome"] == {"outcome": outcome, "release": "0.2.0-new", "live": live, **FAILURE}
    assert report["message"] == f"pi4: release 0.2.0-new FAILED its health: no frames for 30 s. {says}"


def test_a_rollback_says_from_where_to_where_and_the_gate() -> None:
    rollback = {"changed": True, "previous": {"release": "0.2.0-new"}, "deployment": {"release": "0.1.0-old"}}
    assert kiosk.pi_kiosk_rollback_report(rollback, HEALTHY, host="pi4", check_mode=False) == (
        "pi4: rolled back from 0.2.0-new to 0.1.0-old, healthy: ready in 4.8 s, 0.07 frames/s.")
    unchanged = {"changed": False, "deployment": {"release": "0.1.0-old"}}
    assert kiosk.pi_kiosk_rollback_report(unchanged, {"skipped": True}, host="pi4", check_mode=True) == (
        "(check mode, nothing changed) pi4: already on 0.1.0-old.")


def test_the_health_after_an_upgrade_names_what_changed() -> None:
    report = kiosk.pi_kiosk_health_report(HEALTHY, None, host="pi3", context="after the upgrade: rebooted",
                                          outcome="upgraded", window=30)
    assert report["outcome"] == {"outcome": "upgraded", "detail": f"after the upgrade: rebooted; kiosk {HEALTHY_TEXT}"}
    assert report["message"] == f"pi3: upgraded; after the upgrade: rebooted; kiosk {HEALTHY_TEXT}."
    # A Pi without the kiosk passes.
    assert kiosk.pi_kiosk_health_report({"installed": False}, None, host="pi3", context="", outcome="healthy",
                                        window=30)["message"] == "pi3: healthy; no kiosk installed."


def test_an_unhealthy_kiosk_after_an_upgrade_fails_with_the_gate_s_reason() -> None:
    failure = {"phase": "ready", "reason": "pi-kiosk.service failed"}
    report = kiosk.pi_kiosk_health_report({"failed": True}, failure, host="pi3", context="after the upgrade: rebooted",
                                          outcome="upgraded", window=30)
    assert report["outcome"] == {"outcome": "failed", **failure}
    assert report["message"] == ("pi3: the kiosk is NOT healthy after the upgrade: rebooted. ready: "
                                 "pi-kiosk.service failed.")
    bare = kiosk.pi_kiosk_health_report({}, failure, host="pi3", context="", outcome="healthy", window=30)
    assert bare["message"] == "pi3: the kiosk is NOT healthy. ready: pi-kiosk.service failed."


def test_the_role_uses_every_filter_it_defines() -> None:
    """No dead filter: each is called from the role's YAML."""
    yaml_text = "".join(p.read_text() for p in (ROOT / "roles/pi_kiosk").rglob("*.yml"))
    assert {name for name in kiosk.FilterModule().filters() if name not in yaml_text} == set()

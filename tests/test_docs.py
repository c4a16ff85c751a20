"""The documentation: a short README, every page in the site's nav, and the pages that state the code's facts
(the station.yaml reference, generated; the MQTT contract, checked both ways against runtime/station/messages.py
and its commands against runtime/station/dispatch.py's HANDLERS).

The site itself (`mkdocs build --strict`: every link and anchor) is built by .ci/run, not here: it imports torch
(the export page's tolerances) and takes 5-20 s."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from runtime.result import Result
from runtime.self_test import SelfTestReport
from runtime.station import messages
from runtime.station.config import StationConfig
from runtime.station.dispatch import HANDLERS
from runtime.station.drift import DriftState
from runtime.station.stats import StationStats

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_LIMIT = 20_000
OUTBOX_FIELDS = {"seq"}  # added by the outbox to every message it carries (runtime/station/outbox.py)
# nested objects with fixed keys
FIXED_NESTED = {"bundle", "latency_ms", "inference_ms", "box", "thumbnail", "station_verdict", "commands", "outbox",
                "mqtt", "evidence", "self_test"}
BY_NAME = {"cameras"}  # name -> an object with fixed keys (each documented entry has the fields of the one built)


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _nav_pages(entries: list) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_readme_is_short_and_its_links_resolve_on_github_and_on_the_site():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT, f"README.md is {len(readme.encode())} bytes (at most {README_LIMIT})"
    links = [link.split("#")[0] for link in re.findall(r"\]\(([^)]+)\)", readme) if "://" not in link]
    assert links, "the README links into the docs"
    missing = [link for link in links if link and not (REPO / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    site = hooks.fill((DOCS / "index.md").read_text())
    assert site.startswith("# edge-anomaly") and "](docs/" not in site and "](ARCHITECTURE.md" not in site


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, (f"not in the nav: {sorted(set(pages) - set(nav))}; "
                                  f"in the nav but missing: {sorted(set(nav) - set(pages))}")
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"


def _schema_keys(model: type, prefix: str = "") -> set[str]:
    """Every key a station.yaml may hold, read from the pydantic models by another route than the generator."""
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        nested = hooks._section(field.annotation)
        if nested is not None:
            repeated = "list" in str(field.annotation)
            keys |= _schema_keys(nested, f"{prefix}{name}{'[]' if repeated else ''}.")
    return keys


def test_the_configuration_reference_is_generated_from_the_models_with_a_meaning_for_every_key():
    page = (DOCS / "station" / "configuration.md").read_text()
    assert hooks.MARKER.format("station-config") in page
    assert "| `mqtt.host`" not in page, "the reference is generated: no hand-copied rows in the page"
    rendered = hooks.fill(page)
    rows = {line.split("|")[1].strip().strip("`"): line for line in rendered.splitlines()
            if line.startswith("| `")}
    assert set(rows) == _schema_keys(StationConfig)
    assert "| `mqtt.port` | int, ≥ 1, ≤ 65535 | `1883` | broker port |" in rendered
    assert "| `cameras[].mode` | `continuous` \\| `trigger` \\| `folder` | required |" in rendered
    unexplained = [key for key, line in rows.items() if not line.rstrip(" |").split("|")[-1].strip()]
    assert not unexplained, f"give these fields a Field(description=...) in runtime/station/config.py: {unexplained}"


def test_the_boards_page_holds_devices_readme_and_every_board_result():
    rendered = hooks.fill((DOCS / "boards.md").read_text())
    assert (REPO / "devices" / "README.md").read_text().splitlines()[2] in rendered
    for result in (REPO / "devices" / "results").glob("*.md"):
        assert f"### {result.stem}: measured results" in rendered
    assert "](results/" not in rendered


def test_the_parity_tolerances_on_the_export_page_are_the_exporters():
    from exporters.parity import DEFAULT_TOLERANCES

    rendered = hooks.fill((DOCS / "export.md").read_text())
    bf16 = DEFAULT_TOLERANCES["bf16"]
    assert (f"| bf16 | {bf16.max_heatmap_diff} | {bf16.min_score_rank_corr} | {bf16.max_image_auroc_drop} | "
            f"{bf16.max_pixel_auroc_drop} |") in rendered
    assert "| fp16, bf16 |" not in rendered


def _sections(page: Path) -> dict[str, str]:
    """``## `topic` `` heading -> the text under it."""
    parts = re.split(r"^## `([^`]+)`\n", page.read_text(), flags=re.MULTILINE)
    return {parts[i]: re.split(r"^## ", parts[i + 1], flags=re.MULTILINE)[0] for i in range(1, len(parts), 2)}


def _examples(text: str) -> list[dict]:
    """Every JSON object in the section's ```json blocks (a block may hold several)."""
    objects, decoder = [], json.JSONDecoder()
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL):
        position = 0
        while block[position:].strip():
            position += len(block[position:]) - len(block[position:].lstrip())
            found, position = decoder.raw_decode(block, position)
            objects.append(found)
    return objects


def _assert_same_fields(documented: dict, built: dict, what: str) -> None:
    documented_keys = set(documented) - OUTBOX_FIELDS
    assert documented_keys == set(built), (f"{what}: documented but not sent {sorted(documented_keys - set(built))}, "
                                           f"sent but not documented {sorted(set(built) - documented_keys)}")
    for key in FIXED_NESTED & set(built):
        if isinstance(built[key], dict) and isinstance(documented[key], dict):
            _assert_same_fields(documented[key], built[key], f"{what}.{key}")
    for key in BY_NAME & set(built):
        (entry,) = built[key].values()
        assert documented[key], f"{what}.{key}: the example names none"
        for name, example in documented[key].items():
            _assert_same_fields(example, entry, f"{what}.{key}.{name}")


def _inspection() -> messages.Inspection:
    result = Result(score=30.0, normalized_score=0.9, label="anomalous", confidence=1.0, kind="local",
                    heatmap=np.zeros((4, 4), np.float32), kind_scores={"local": 1.0}, latency_ms=10.0)
    bundle = messages.BundleInfo("b", "0" * 64, "/b.tar", "0.1.0", None, 24.0)
    return messages.Inspection("i", "s", "cam", "cam#1", "A-1", 0.0, result, bundle, [(1, 2, 3, 4)], None, 12.0)


def _built_messages() -> dict[str, list[dict]]:
    """Every payload messages.py builds, keyed by the doc section that documents it (in its order of examples)."""
    inspection = _inspection()
    bundle = inspection.bundle
    stored = {"id": "i", "camera": "cam", "part_id": "A-1", "label": "anomalous", "kind": "local", "score": 30.0,
              "normalized_score": 0.9, "time": 0.0, "bundle_name": "b", "bundle_hash": "0", "overlay": None}
    review = {"time": 0.0, "verdict": "normal", "reviewer": "Ines", "note": "", "copy": None}
    drift = DriftState("drift", "bundle", "brightness", -1.6, 0.0, (("brightness", -1.6),)).to_dict()
    checked = SelfTestReport(True, 1.0, 0.0, 8, {"model": "cpu", "flags": []}, None, "self-test passed")
    camera_status = messages.status_camera("trigger", "ok", None, replace(bundle, self_test=checked.to_dict()), drift,
                                           None, False)
    camera_beat = messages.heartbeat_camera("ok", StationStats().summary("side"), drift, None)
    return {
        "status": [messages.status_message("s", {"side": camera_status}, 0.0),
                   messages.offline_message("s", "connection lost", None)],
        "heartbeat": [messages.heartbeat_message(
            "s", 0.0, {"side": camera_beat}, command_errors=0, outbox_pending=0, dropped_results=0,
            mqtt_connected=True, mqtt_connections=1, mqtt_delivered=0, mqtt_inflight=0, evidence_bytes=0)],
        "<camera>/result": [messages.result_message(inspection)],
        "<camera>/alert": [messages.alert_message(inspection, np.zeros((8, 8, 3), np.uint8), 80)],
        "<camera>/review": [messages.review_message("s", stored, review)],
        "<camera>/drift": [messages.drift_message("s", "cam", drift, bundle)],
    }


def test_every_documented_payload_has_exactly_the_fields_messages_py_sends():
    sections = _sections(DOCS / "station" / "mqtt.md") | _sections(DOCS / "station" / "drift.md")
    sections["<camera>/drift"] = (DOCS / "station" / "drift.md").read_text()
    for topic, built in _built_messages().items():
        documented = _examples(sections[topic])
        assert len(documented) >= len(built), f"{topic}: no JSON example in the docs"
        for example, message in zip(documented, built, strict=False):
            _assert_same_fields(example, message, topic)
    assert "`camera_frame`" in sections["<camera>/result"]  # sent only for GenICam cameras
    assert "camera_frame" in messages.result_message(_with_camera_frame())


def _with_camera_frame() -> messages.Inspection:
    inspection = _inspection()
    return messages.Inspection(**{**inspection.__dict__, "camera_frame": {"frame_id": 1, "timestamp_ns": 0}})


def test_every_command_error_example_has_the_fields_error_message_sends():
    documented = _examples(_sections(DOCS / "station" / "mqtt.md")["cmd/error"])
    base = set(messages.error_message("inspect", "error"))
    extra = {"part_id", "camera", "bundle"}  # the fields the station passes when the payload held them
    assert documented and all(base <= set(example) <= base | extra for example in documented)
    assert set().union(*documented) == base | extra


def _topic_table() -> dict[str, str]:
    """The contract table: topic -> direction."""
    rows = re.findall(r"^\| `(<base>/[^`]+)` \| ([^|]+) \|", (DOCS / "station" / "mqtt.md").read_text(), re.MULTILINE)
    return {topic: direction.strip() for topic, direction in rows}


def _published_topics() -> set[str]:
    """Every topic ``messages.Topics`` names, as the docs write it (``<base>``, ``<camera>``)."""
    topics = messages.Topics("P", "S")
    names = set()
    for name, member in vars(messages.Topics).items():
        if name.startswith("_") or name in {"base", "commands", "command_name"}:
            continue
        value = member.fget(topics) if isinstance(member, property) else getattr(topics, name)("<camera>")
        names.add(value.replace(topics.base, "<base>"))
    return names


def test_the_topic_table_matches_messages_topics_both_ways():
    table = _topic_table()
    published = {topic for topic, direction in table.items() if direction.startswith("daemon")}
    assert published == _published_topics()
    commands = [topic for topic, direction in table.items() if direction.endswith("daemon")]
    command_filter = messages.Topics("P", "S").commands[0].replace("P/S", "<base>")
    assert commands and all(re.fullmatch(command_filter.replace("+", "[a-z]+"), topic) for topic in commands)
    sections = _sections(DOCS / "station" / "mqtt.md")
    assert {topic.removeprefix("<base>/") for topic in table} - {"<camera>/drift"} <= set(sections)


def test_the_documented_commands_are_the_handlers_dispatch_has_both_ways():
    """A command in the table and with a section of its own for every handler, and a handler for every command the
    page documents (``cmd/error`` is the station's answer, not a command)."""
    documented = {topic.removeprefix("<base>/cmd/") for topic, direction in _topic_table().items()
                  if direction.endswith("daemon")}
    assert documented == set(HANDLERS), (f"documented but not handled {sorted(documented - set(HANDLERS))}, "
                                         f"handled but not documented {sorted(set(HANDLERS) - documented)}")
    sections = {topic.removeprefix("cmd/") for topic in _sections(DOCS / "station" / "mqtt.md")
                if topic.startswith("cmd/") and topic != "cmd/error"}
    assert sections == set(HANDLERS), f"one `## cmd/<name>` section per command: {sorted(sections)}, {sorted(HANDLERS)}"

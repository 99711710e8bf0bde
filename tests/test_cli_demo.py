"""``linkstack demo``: the main job, in process and as a real command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from linkstack.cli.main import Streams, main

if TYPE_CHECKING:
    from onboard.model import ModelHandle


def run_demo(*argv: str) -> tuple[int, bytes, str]:
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = main(["demo", *argv], Streams(io.BytesIO(), stdout, stderr))
    return code, stdout.getvalue(), stderr.getvalue()


def reference(handle: ModelHandle, record: dict[str, Any]) -> tuple[int, ...]:
    """What ``onboard generate`` makes for the same prompt ids and parameters."""
    from linkstack.inference.protocol import GenerationParams
    from onboard.generation import generate
    from onboard.service import params_from_wire

    p = record["params"]
    wire = GenerationParams.from_floats(
        max_new_tokens=p["max_new_tokens"],
        temperature=p["temperature"],
        top_p=p["top_p"],
        seed=p["seed"],
        stop_ids=p["stop_ids"],
    )
    return generate(handle, record["prompt_ids"], params_from_wire(wire)).generated_ids


@pytest.mark.parametrize(
    "options",
    [
        ["--profile", "ideal"],
        ["--profile", "s-band", "--ber", "1e-4", "--seed", "3"],
        ["--profile", "s-band", "--temperature", "0.7", "--top-p", "0.9", "--seed", "9"],
    ],
)
def test_demo_json_matches_the_reference(
    embedded_model: ModelHandle, xdg_cache_home: object, options: list[str]
) -> None:
    code, out, err = run_demo("--json", "--max-new-tokens", "24", *options, "Hi there")
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert record["received_ids"] == record["generated_ids"]
    assert tuple(record["generated_ids"]) == reference(embedded_model, record)
    assert len(record["generated_ids"]) == 24 or record["finish_reason"] == "stop"
    assert record["prompt_ids"] == embedded_model.tokenizer.encode_prompt("Hi there")
    assert record["uplink_bits"] > 0
    assert record["frames_received"] > 0
    assert 0 < record["time_to_first_token_s"] <= record["total_s"]
    if "--ber" in options:
        assert record["rs_symbols_corrected"] > 0
        assert record["channels"]["downlink"]["bits_flipped"] > 0


def test_demo_streams_text_live_without_json(xdg_cache_home: object) -> None:
    code, out, err = run_demo("--profile", "ideal", "--max-new-tokens", "8", "Hi")
    assert code == 0, err
    assert out.endswith(b"\n") and len(out) > 1
    assert "8 ids" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ber", "2"], "not a probability"),
        (["--drop", "-0.1"], "not a probability"),
        (["--outage", "10"], "START:SECONDS"),
        (["--outage", "x:y"], "START:SECONDS"),
        (["--outage", "5:0"], "SECONDS > 0"),
        (["--profile", "mars"], "invalid choice"),
        (["--max-new-tokens", "many"], "invalid int"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run_demo(*argv)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "0"], "argument --timeout: 0 is not a positive number of seconds"),
        (["--temperature", "0.0001"], "--temperature 0.0001 is not a multiple of 0.001"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0 must be in 1..16384"),
    ],
)
def test_impossible_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_demo(*argv)
    err += capsys.readouterr().err  # argparse's own messages go to the process stderr
    assert code == 2
    assert out == b""
    assert message in err
    assert "Traceback" not in err


def test_a_model_that_cannot_load_exits_1_with_a_message() -> None:
    code, out, err = run_demo("--model", "/nonexistent/checkpoint")
    assert code == 1
    assert out == b""
    assert err.startswith("linkstack demo: loading model /nonexistent/checkpoint ...\n")
    assert err.splitlines()[-1].startswith("linkstack: ") and "/nonexistent/checkpoint" in err
    assert "Traceback" not in err


def test_the_console_script_runs_the_demo(tmp_path: object) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "linkstack.cli.main", "demo", "--json", "--max-new-tokens", "6"],
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    record = json.loads(done.stdout)
    assert record["match"] is True and len(record["received_ids"]) == 6


def test_demo_json_counts_the_recovery_of_a_lossy_link(
    embedded_model: ModelHandle, xdg_cache_home: object
) -> None:
    options = ["--profile", "s-band", "--drop", "0.1", "--seed", "3", "--no-chat"]
    code, out, err = run_demo("--json", "--max-new-tokens", "40", *options, "Hi there")
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert tuple(record["generated_ids"]) == reference(embedded_model, record)
    recovery = record["recovery"]
    assert set(recovery) == {
        "tc_frames_retransmitted",
        "cop1_alerts",
        "resend_requests",
        "token_ranges_requested",
        "token_ids_requested",
        "token_ids_resent",
        "ends_resent",
        "end_acks",
        "tokens_lost",
        "lost_ranges",
        "duplicate_ids_dropped",
    }
    assert recovery["end_acks"] == 1
    assert recovery["tokens_lost"] == 0 and recovery["lost_ranges"] == []
    assert record["channels"]["downlink"]["units_lost"] > 0


def test_demo_rekey_at_reports_the_rekey_in_json(
    embedded_model: ModelHandle, xdg_cache_home: object
) -> None:
    # The rekey goes up with the prompt (0 s after it) on TC VC 1 while the answer
    # streams on VC 0: both key management PDUs are applied and the answer matches.
    options = ["--profile", "s-band", "--seed", "5", "--no-chat", "--rekey-at", "0"]
    code, out, err = run_demo("--json", "--max-new-tokens", "24", *options, "Hi there")
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert tuple(record["generated_ids"]) == reference(embedded_model, record)
    rekey = record["rekey"]
    assert (rekey["tc_vcid"], rekey["key_id"]) == (1, 140)
    assert [(a["procedure"], a["key_ids"]) for a in rekey["applied"]] == [
        ("otar", [140]),
        ("activation", [140]),
    ]
    assert 0 <= rekey["sent_s"] <= rekey["applied"][0]["at_s"] <= rekey["applied"][1]["at_s"]
    # One Type-AD frame each: the request on VC 0, the OTAR and the activation on VC 1.
    assert rekey["farm_vr"] == {"0": 1, "1": 2}
    security = record["security"]
    assert security["enabled"] is True
    assert security["mac_failures"] == 0 and security["unknown_spi"] == 0
    assert record["recovery"]["cop1_alerts"] == 0


def test_demo_rekey_at_with_keys_without_a_management_sa_is_a_one_line_usage_error(
    tmp_path: Path,
) -> None:
    # --rekey-at with --keys rekeys under the key file's master key on the VC of its
    # management SA; a key file without one is refused before the model loads.
    from linkstack.sdls.keystore import generate_key_file

    keys = tmp_path / "keys.json"
    generate_key_file(keys)
    code, out, err = run_demo("--rekey-at", "1", "--keys", str(keys), "Hi")
    assert code == 2
    assert out == b""
    assert err == (
        f"linkstack: --rekey-at with --keys {keys}: the key file has no management SA for"
        " key management on a TC VC of its own; make one with"
        " `linkstack keys generate PATH --management-vc 1`\n"
    )
    assert "loading model" not in err


@pytest.mark.parametrize("value", ["-1", "-0.5", "soon", "nan", "inf", ""])
def test_bad_rekey_at_values_exit_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_demo(f"--rekey-at={value}", "Hi")
    err += capsys.readouterr().err  # argparse's own messages go to the process stderr
    assert code == 2
    assert out == b""
    assert f"argument --rekey-at: {value!r} is not a number of seconds >= 0" in err
    assert "Traceback" not in err

"""``linkstack demo --coding conv``: the demo over the coded downlink (the convolutional
code over BPSK and white Gaussian noise, linkstack.radio.coded), in process."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.test_cli_demo import reference, run_demo

if TYPE_CHECKING:
    from onboard.model import ModelHandle


@pytest.mark.slow
def test_demo_over_the_coded_downlink_at_3_5_db_matches(
    embedded_model: ModelHandle, xdg_cache_home: object
) -> None:
    code, out, err = run_demo(
        "--json", "--max-new-tokens", "24", "--coding", "conv", "--ebn0", "3.5", "Hi there"
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["match"] is True
    assert record["error"] is None
    assert record["received_ids"] == record["generated_ids"]
    assert tuple(record["generated_ids"]) == reference(embedded_model, record)
    downlink = record["channels"]["downlink"]
    assert downlink["bits_flipped"] == 0  # the noise is on the symbols, not the bits
    coded = downlink["coded"]
    assert coded["symbols_sent"] == 16 * 1279 * downlink["units_sent"]
    assert coded["raw_bit_errors"] > 0
    assert coded["slips"] == 0
    assert coded["phase_deg"] in (0, 180)
    assert coded["cadus_delivered"] == downlink["units_delivered"] > 0
    assert coded["locks"] >= 1
    assert coded["hypothesis"]["inverted"] == (coded["phase_deg"] == 180)
    assert coded["hypothesis"]["symbol_offset"] in (0, 1)
    # The uplink is not coded and keeps its record as it was.
    assert "coded" not in record["channels"]["uplink"]


@pytest.mark.slow
def test_an_uncoded_demo_has_no_coded_record(xdg_cache_home: object) -> None:
    code, out, err = run_demo("--json", "--profile", "ideal", "--max-new-tokens", "4", "Hi")
    assert code == 0, err
    assert "coded" not in json.loads(out)["channels"]["downlink"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ebn0", "3.5"], "--ebn0 needs --coding conv"),
        (["--coding", "none", "--ebn0", "3.5"], "--ebn0 needs --coding conv"),
        (["--slips", "0.1"], "--slips needs --coding conv"),
        (["--coding", "conv", "--ebn0", "loud"], "'loud' is not a number of dB"),
        (["--coding", "conv", "--ebn0", "inf"], "'inf' is not a number of dB"),
        (["--coding", "conv", "--slips", "2"], "2 is not a probability"),
        (["--coding", "turbo"], "invalid choice"),
    ],
)
def test_bad_coding_options_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_demo(*argv)
    err += capsys.readouterr().err  # argparse's own messages go to the process stderr
    assert code == 2
    assert out == b""
    assert message in err
    assert "Traceback" not in err

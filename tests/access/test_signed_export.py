"""A signed evaluation: the QPPV signs a quarterly export (`rmm export --sign`); the signature covers manifest.json,
which holds every file's hash, so `rmm export verify DIR` fails on any changed file, a changed manifest or a changed
signature; the report says who signed, when and what it means; only a qppv with their password signs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from rmm_monitor.dev.simulate import generate
from rmm_monitor.kpi.fixtures import encode
from rmm_monitor.store import Store, process_batch

from support.people import PASSWORDS, make_people
from support.workers import NOW, run_cli

pytestmark = pytest.mark.xdist_group(name="signed-export")
AS_OF = "2026-10-15T00:00:00Z"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp("signed")
    db = root / "sim.duckdb"
    with Store(db) as store:
        process_batch(store, encode(generate(seed=3, patients=60, end=NOW, days=200)))
    people = make_people(db)
    out = root / "export"
    res = run_cli(
        "export", "--quarter", "2026Q3", "--db", str(db), "--out", str(out), "--as-of", AS_OF, "--quiet", "--sign",
        "--password-stdin", env={"RMM_TOKEN": people["qppv.wang"]}, input_text=PASSWORDS["qppv.wang"] + "\n",
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["signed_by"] == "qppv.wang"
    return db, out, people


def verify(directory, db=None) -> tuple[int, dict]:
    res = run_cli("export", "verify", str(directory), *(("--db", str(db)) if db else ()))
    return res.returncode, json.loads(res.stdout)


def test_a_signed_export_verifies_and_names_its_signer(signed):
    db, out, _ = signed
    code, result = verify(out, db)
    assert code == 0 and result["ok"] and result["signed"], result
    assert result["signer"].startswith("Wang Li (qppv.wang) — approved — 2026-11-25T")
    sig = json.loads((out / "signature.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signing"] == {k: sig[k] for k in ("user_id", "full_name", "meaning", "signed_at")}
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True).stdout
    flowing = " ".join(text.split())
    assert "Signed electronically by Wang Li (qppv.wang), meaning: approved, at 2026-11-25T" in flowing
    assert "Audit trail" in flowing
    assert PASSWORDS["qppv.wang"] not in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "tamper,problem",
    [
        (lambda d: (d / "kpis.csv").write_text((d / "kpis.csv").read_text() + "x\n"), "kpis.csv changed"),
        (lambda d: (d / "units.parquet").unlink(), "units.parquet is missing"),
        (
            lambda d: (d / "manifest.json").write_text(
                (d / "manifest.json").read_text().replace('"events_total"', '"events_total_"')
            ),
            "manifest.json changed after it was signed",
        ),
        (
            lambda d: (d / "signature.json").write_text(
                (d / "signature.json").read_text().replace('"approved"', '"reviewed"')
            ),
            "the signature does not verify",
        ),
    ],
)
def test_any_change_fails_verification(signed, tmp_path, tamper, problem):
    _db, out, _ = signed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tamper(copy)
    code, result = verify(copy)
    assert code == 1 and any(problem in p for p in result["problems"]), result


def test_a_signature_with_another_key_is_caught_against_the_registry(signed, tmp_path):
    """Re-signing the manifest with a key of one's own passes the offline check of the directory alone, but not
    the check against the signer's registered key."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from rmm_monitor.access import signatures

    db, out, _ = signed
    copy = tmp_path / "forged"
    shutil.copytree(out, copy)
    sig = json.loads((copy / "signature.json").read_text())
    key = Ed25519PrivateKey.generate()
    sig["signature"] = base64.b64encode(key.sign(signatures.payload(sig))).decode()
    sig["public_key"] = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    (copy / "signature.json").write_text(json.dumps(sig))
    assert verify(copy)[0] == 0  # the directory is self-consistent ...
    code, result = verify(copy, db)  # ... but the key is not Wang Li's
    assert code == 1 and "not the signer's registered key" in " ".join(result["problems"])


def test_only_a_qppv_with_their_password_signs(signed, tmp_path):
    db, _out, people = signed
    base = ("export", "--quarter", "2026Q3", "--db", str(db), "--as-of", AS_OF, "--quiet", "--sign", "--password-stdin")
    res = run_cli(*base, "--out", str(tmp_path / "a"), env={"RMM_TOKEN": people["pv.chen"]},
                  input_text=PASSWORDS["pv.chen"] + "\n")  # fmt: skip
    assert res.returncode == 4 and "may not sign export" in res.stderr
    res = run_cli(*base, "--out", str(tmp_path / "b"), env={"RMM_TOKEN": people["qppv.wang"]},
                  input_text="not-the-password\n")  # fmt: skip
    assert res.returncode == 3
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists(), "refused before anything is written"

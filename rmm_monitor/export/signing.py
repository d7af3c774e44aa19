"""A signed evaluation: the QPPV's signature over manifest.json, which holds the sha256 of every file, so that any
changed file, or a changed manifest, fails `rmm export verify DIR`.

signature.json beside the manifest holds the signature as the store keeps it (signer, full name, meaning, time,
the manifest's hash, the Ed25519 signature) and the signer's public key, so an inspector can check the directory
on its own; given the database (or the worker), verify also checks that the key is the one registered for the
signer.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Callable, Optional

from rmm_monitor.access import signatures

from .evaluation import sha256

SIGNATURE_FILE = "signature.json"


def record_id(manifest: dict) -> str:
    return f"{manifest['quarter']}@{manifest['as_of']}"


def manifest_hash(out: Path) -> str:
    return sha256(out / "manifest.json")


def write_signature(out: Path, sig: dict, public_key: str) -> None:
    doc = {**sig, "public_key": public_key, "covers": "manifest.json"}
    (out / SIGNATURE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def verify_dir(out: Path, registered_key: Optional[Callable[[str], Optional[str]]] = None) -> dict:
    """Every file against the manifest; the manifest against the signature; the signature against its key (and,
    with `registered_key`, that key against the signer's registered one). {"ok", "signed", "problems", ...}"""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems: list[str] = []
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for name, info in sorted(manifest["files"].items()):
        path = out / name
        if not path.exists():
            problems.append(f"{name} is missing")
        elif sha256(path) != info["sha256"]:
            problems.append(f"{name} changed: its sha256 is not the one in manifest.json")
    result: dict = {"quarter": manifest["quarter"], "as_of": manifest["as_of"], "signed": False}
    sig_path = out / SIGNATURE_FILE
    if sig_path.exists():
        sig = json.loads(sig_path.read_text(encoding="utf-8"))
        result.update(signed=True, signer=signatures.shown(sig)["text"])
        if sig.get("record_hash") != manifest_hash(out):
            problems.append("manifest.json changed after it was signed")
        if sig.get("record_id") != record_id(manifest) or sig.get("record_kind") != "export":
            problems.append("the signature is about another export")
        named = manifest.get("signing") or {}
        if any(str(named.get(k)) != str(sig.get(k)) for k in ("user_id", "full_name", "meaning")):
            problems.append("the signer named in the manifest and report is not the one who signed")
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig["public_key"])).verify(
                base64.b64decode(sig["signature"]), signatures.payload(sig)
            )
        except (InvalidSignature, ValueError, KeyError):
            problems.append("the signature does not verify (signer, meaning, time or manifest hash changed)")
        if registered_key is not None:
            key = registered_key(sig.get("key_id", ""))
            if key is None:
                problems.append(f"no key {sig.get('key_id')} is registered for the signer")
            elif key != sig.get("public_key"):
                problems.append("the public key in signature.json is not the signer's registered key")
    elif manifest.get("signing"):
        problems.append("the manifest names a signer but signature.json is missing")
    result.update(ok=not problems, problems=problems)
    return result

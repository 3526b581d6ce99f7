#!/usr/bin/env python3
"""Verify a Drover audit export (`drover audit export --out FILE`) without trusting Drover.

    python3 verify-audit-export.py FILE [--public-key KEY]

Checks, from the file alone:
  1. the chain: entries numbered 1, 2, 3 ... without a gap, each linked to the previous one's
     hash, each hash recomputed from its fields (SHA-256 before `keyed_from_seq`, HMAC-SHA256
     under the chain key from it on);
  2. every checkpoint's Ed25519 signature, with the public key given (`--public-key`, the
     content of DATA_DIR/audit/checkpoint.pub, obtained out of band) or else the export's own;
  3. every checkpoint against the log: the entry it names exists with the same hash (else it
     was rewritten), and the log reaches the last checkpoint (else it was truncated).
Exit 0 and "OK ..." when all holds; exit 1 and "BROKEN at entry N: why" at the first problem.
Needs Python 3.8+ and, for the signatures, the `cryptography` package.
"""
import base64, hashlib, hmac, json, struct, sys

GENESIS = "0" * 64


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def encoding(prev_hash, e):
    fields = [prev_hash.encode(), struct.pack(">q", e["seq"]), struct.pack(">q", e["ts_ms"])]
    for k in ("principal", "action", "target", "outcome", "source", "request_id", "detail_json"):
        fields.append(e[k].encode())
    return b"".join(struct.pack(">Q", len(f)) + f for f in fields)


def broken(seq, why):
    print(f"BROKEN at entry {seq}: {why}")
    sys.exit(1)


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    path, public = args[0], None
    if "--public-key" in args:
        public = args[args.index("--public-key") + 1].strip()
    header, checkpoints, entries = None, [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            v = json.loads(line)
            kind = v.get("kind")
            if kind == "header":
                header = v
            elif kind == "checkpoint":
                checkpoints.append(v)
            elif kind == "entry":
                entries.append(v)
            else:
                print(f"line {n}: unknown kind {kind!r}")
                sys.exit(2)
    if not header or header.get("format") != "drover-audit-export/1":
        print("not a drover-audit-export/1 file")
        sys.exit(2)
    key = bytes.fromhex(header["chain_key"])
    keyed_from = header["keyed_from_seq"]
    prev_seq, prev_hash, hashes = 0, GENESIS, {}
    for e in entries:
        if e["seq"] != prev_seq + 1:
            broken(prev_seq + 1, f"entry {prev_seq + 1} is missing (next present entry is {e['seq']})")
        if e["prev_hash"] != prev_hash:
            broken(e["seq"], "its link to the previous entry does not match")
        if json.loads(e["detail_json"]) != e["detail"]:
            broken(e["seq"], "its detail does not match the text its hash covers")
        data = encoding(prev_hash, e)
        if e["seq"] >= keyed_from:
            want = hmac.new(key, data, hashlib.sha256).hexdigest()
        else:
            want = hashlib.sha256(data).hexdigest()
        if want != e["hash"]:
            broken(e["seq"], "its content does not match its hash (altered, or re-chained without the key)")
        prev_seq, prev_hash = e["seq"], e["hash"]
        hashes[e["seq"]] = e["hash"]
    signed = "not checked (pip install cryptography)"
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.exceptions import InvalidSignature

        pk = Ed25519PublicKey.from_public_bytes(b64url(public or header["checkpoint_public_key"]))
        for c in checkpoints:
            msg = f"drover-audit-checkpoint\n{c['seq']}\n{c['hash']}\n{c['ts_ms']}".encode()
            try:
                pk.verify(b64url(c["sig"]), msg)
            except InvalidSignature:
                print(f"checkpoint of entry {c['seq']}: the signature does not verify")
                sys.exit(1)
        signed = "signatures checked" + (" with the given key" if public else " with the export's key")
    except ImportError:
        pass
    for c in checkpoints:
        if c["seq"] > prev_seq:
            broken(prev_seq + 1, f"the log ends at entry {prev_seq} but a signed checkpoint shows it reached {c['seq']} (truncated)")
        if hashes.get(c["seq"]) != c["hash"]:
            broken(c["seq"], "it differs from the signed checkpoint of that entry (rewritten)")
    print(f"OK: {len(entries)} entries, head {prev_seq} {prev_hash}; {len(checkpoints)} checkpoints, {signed}")


if __name__ == "__main__":
    main()

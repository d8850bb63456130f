#!/usr/bin/env python3
"""Verifies the DKIM signature of one message with dkimpy, independently of vraagbaak.

usage: dkim_verify.py MESSAGE.eml RECORD-NAME TXT-VALUE

The DNS lookup is answered from the arguments (the record `vraagbaak dkim keygen`
printed); any other name does not exist. Prints `pass` or `fail: reason`; exit 0 on pass.
"""
import sys

import dkim


def main():
    path, name, txt = sys.argv[1], sys.argv[2].rstrip(".").lower(), sys.argv[3]
    with open(path, "rb") as f:
        msg = f.read()

    def dnsfunc(qname, timeout=5):
        q = qname.decode() if isinstance(qname, bytes) else qname
        return txt.encode() if q.rstrip(".").lower() == name else None

    d = dkim.DKIM(msg)
    try:
        ok = d.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        print(f"fail: {e}")
        return 1
    if not ok:
        print("fail: signature does not verify")
        return 1
    print("pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())

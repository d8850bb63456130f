#!/usr/bin/env python3
"""Reads a MIME digest with Python's standard `email` package, independently of vraagbaak.

usage: digest_check.py DIGEST.eml

Prints one JSON object: the outer type, the table of contents' text, the footer's, and
for each message/rfc822 part of the multipart/digest its Subject, From and Message-ID.
Exits 1 when the structure is not a multipart/mixed holding a multipart/digest.
"""
import email
import email.policy
import json
import sys


def main():
    with open(sys.argv[1], "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    out = {"type": msg.get_content_type(), "subject": str(msg["subject"]), "posts": []}
    if msg.get_content_type() != "multipart/mixed":
        print(json.dumps(out))
        return 1
    parts = list(msg.iter_parts())
    digests = [p for p in parts if p.get_content_type() == "multipart/digest"]
    if len(digests) != 1 or parts[0].get_content_type() != "text/plain":
        print(json.dumps(out))
        return 1
    out["toc"] = parts[0].get_content()
    out["footer"] = parts[-1].get_content() if parts[-1].get_content_type() == "text/plain" else ""
    for p in digests[0].iter_parts():
        if p.get_content_type() != "message/rfc822":
            out["posts"].append({"bad_type": p.get_content_type()})
            continue
        inner = p.get_content()
        out["posts"].append(
            {
                "subject": str(inner["subject"]),
                "from": str(inner["from"]),
                "message_id": str(inner["message-id"]),
                "received": inner["received"] is not None,
            }
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

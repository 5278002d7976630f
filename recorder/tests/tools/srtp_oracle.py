"""libsrtp, through pylibsrtp, as the independent SRTP implementation of the tests.

    srtp_oracle.py protect|unprotect SUITE KEY

KEY is the base64 of key and salt, as a=crypto's inline: carries it. Reads one datagram per
line in hex from stdin and writes one line per datagram: its protected (or unprotected) form in
hex, or "-" where libsrtp refused it (a failed authentication, a replay). RTCP is told apart
by its packet type (RFC 5761).
"""

import base64
import sys

import pylibsrtp

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def main() -> None:
    direction, suite, key = sys.argv[1:4]
    outbound = direction == "protect"
    policy = pylibsrtp.Policy(
        key=base64.b64decode(key + "=" * (-len(key) % 4)),
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            if outbound
            else pylibsrtp.Policy.SSRC_ANY_INBOUND
        ),
        srtp_profile=PROFILES[suite],
    )
    session = pylibsrtp.Session(policy=policy)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        packet = bytes.fromhex(line)
        rtcp = len(packet) > 1 and 192 <= packet[1] <= 223
        try:
            if outbound:
                out = session.protect_rtcp(packet) if rtcp else session.protect(packet)
            else:
                out = session.unprotect_rtcp(packet) if rtcp else session.unprotect(packet)
            print(out.hex())
        except pylibsrtp.Error:
            print("-")


if __name__ == "__main__":
    main()

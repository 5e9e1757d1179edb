"""zq's security: the keys sessions prove (CURVE), the ZAP authenticator that checks
them at the handshake, the permissions that say what each proven key may do, and the
limits that keep hostile input (oversized, malformed or endless) from hurting a broker.
"""

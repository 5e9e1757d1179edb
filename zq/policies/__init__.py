"""Decisions a user may want to change, each behind a small interface."""

from zq.policies.dispatch import DISPATCH_POLICIES, DispatchPolicy, make_dispatch

__all__ = ["DISPATCH_POLICIES", "DispatchPolicy", "make_dispatch"]

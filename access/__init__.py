"""Lapse's domain: the access model, approval policy and the pure logic around them.

Modules here that workflows import (``types``, ``policy``, ``durations``) use pydantic
and the standard library only, so the Temporal sandbox can load them.
"""

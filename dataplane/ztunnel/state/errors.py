"""The one error of the state package: an xDS resource ztunnel cannot take."""

from __future__ import annotations


class ResourceError(ValueError):
    """A resource that cannot be converted to a domain type.

    The message names the field (`addresses[1]`, `rules[0].clauses[2].matches[0].source_ips[0]`)
    and says what is wrong with it, because it goes back to istiod verbatim in the NACK's
    `error_detail` (reference §1: "name: reason" strings joined by "; ").
    """

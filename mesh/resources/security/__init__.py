"""security.istio.io/v1 kinds: AuthorizationPolicy, PeerAuthentication, RequestAuthentication.

The schemas follow Istio's CRDs (v1 and v1beta1 share one schema). The `check` functions add the
rules that Istio enforces beyond the OpenAPI schema: the CEL rules in its CRDs and the checks in
istiod's validating webhook (pkg/config/validation and pkg/config/security). Anything Istio only
warns about (an empty selector, a DENY rule with HTTP-only fields) is accepted here.

One module per kind; `common.py` holds the selector, target references and the shared checks.
"""

from ..kind import ResourceKind
from .authorization_policy import AUTHORIZATION_POLICY
from .peer_authentication import PEER_AUTHENTICATION
from .request_authentication import REQUEST_AUTHENTICATION

SECURITY_KINDS: tuple[ResourceKind, ...] = (AUTHORIZATION_POLICY, PEER_AUTHENTICATION, REQUEST_AUTHENTICATION)

__all__ = ["AUTHORIZATION_POLICY", "PEER_AUTHENTICATION", "REQUEST_AUTHENTICATION", "SECURITY_KINDS"]

"""mesh-ca: the certificate authority that gives every workload its SPIFFE identity."""

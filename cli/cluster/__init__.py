"""`meshctl cluster`: a multi-node cluster of network namespaces on one Linux host."""

"""mesh-runtime, the mesh's kubelet: pods as processes in their own network namespaces, wired by
the CNI chain, supervised with Kubernetes' restart rules, reported through the pod status."""

//! A Kubernetes-compatible REST API server over yun's MVCC store.

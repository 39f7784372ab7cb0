//! An OCI distribution (v1.1) registry server.

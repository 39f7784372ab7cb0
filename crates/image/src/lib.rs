//! Images: content store, manifests, layers, snapshots, build, registry client.

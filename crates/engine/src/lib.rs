//! Local containers from images: run, ps, logs, exec, stop, rm (the layer podman occupies).

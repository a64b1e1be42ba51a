"""Security controls: least-privilege warehouse access and row-level security, the posture and its checks, the
right to erasure, checkpoint key rotation. Imports: layers, resources."""

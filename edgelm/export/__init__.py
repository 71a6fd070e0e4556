"""Artifact export: ONNX (encoders + KV-cache decoders), graph optimisation, ORT Mobile (.ort), ExecuTorch (.pte).

Every writer here takes a ModelBundle and a folder and returns facts for `manifest.json`; parity checks
(`edgelm.verify.parity`) decide whether the artifact is published. Heavy imports stay inside functions.
"""

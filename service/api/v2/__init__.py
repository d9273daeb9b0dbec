"""The Open Inference Protocol (KServe/MLServer/Triton v2): routes, codec and types in one place."""

"""Export: trained weights to ONNX graphs (fp32, fp16, and an int8 graph for CPUs); `vdsr-export --engine` builds
TensorRT engines with vdsr.runtime.backends.tensorrt, where engines are built and run."""

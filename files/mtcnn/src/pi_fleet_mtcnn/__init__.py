"""The MTCNN networks (pnet.onnx, rnet.onnx, onet.onnx) as package data: resources.files(__name__)."""

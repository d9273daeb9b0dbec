"""ONNX export: a stored model as an ONNX graph, for onnxruntime to run where neither
this service nor Python is (C++, Java, C#, JavaScript, a database, the edge).

skl2onnx converts the fitted estimator. It and onnx are the ``onnx`` extra and are
imported on the first export only, so the base install neither needs nor loads them;
without them an export answers 501 naming the extra (``ExtraNotInstalled``).

The graph takes float64 points and computes in float64 throughout: skl2onnx converts
all four algorithms in double, so there is no float32 variant to choose. Its inputs and
outputs carry the names ``/predict``, ``/score`` and the v2 protocol use:

===================  =======  ======================  ============================
name                 dtype    shape                   scikit-learn
===================  =======  ======================  ============================
``points`` (input)   float64  ``[N, n_features]``     ``X``
``labels``           int64    ``[N]``                 ``predict``
``probabilities``    float64  ``[N, n_components]``   ``predict_proba`` (mixtures)
``log_likelihood``   float64  ``[N]``                 ``score_samples`` (mixtures)
``distances``        float64  ``[N, n_clusters]``     ``transform`` (k-means)
===================  =======  ======================  ============================

skl2onnx names them ``X``, ``label``, ``probabilities``, ``score_samples`` and
``scores``, and answers a mixture's labels and scores as ``[N, 1]`` where its k-means
answers labels as ``[N]``. The converted graph is renamed and reshaped here so that
every export has the one signature above, which its ``metadata_props`` then state
(``gmm_service.inputs`` and ``gmm_service.outputs``, as JSON) beside the model's id,
algorithm and sizes.

One repair: skl2onnx's k-means graph takes the square root of
``|x|^2 - 2 x.c + |c|^2`` as it is, and for a point at a center that sum can round to
a tiny negative number, so the distance comes out NaN where sklearn's ``transform``
(which clips the sum at 0 first) answers about 0. The graph gets the same clip: a
``Relu`` before the ``Sqrt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.domain.catalogue.service import Catalogue
from service.domain.training import estimators
from service.errors import ExtraNotInstalled

MEDIA_TYPE = "application/onnx"
INSTALL_HINT = "pip install 'gmm-service[onnx]'"
#: The newest ONNX opset an export may use. Fixed, so that an export does not change
#: with the installed onnx, and so that onnxruntime 1.13 or newer (opset 17) runs it.
TARGET_OPSET = 17
#: The batch dimension's name, shared by the input and every output.
BATCH = "N"
#: Prefix of the keys this service puts in the model's ``metadata_props``.
METADATA_PREFIX = "gmm_service."
#: The shape that flattens ``[N, 1]`` into ``[N]`` (an initializer of the graph).
_FLAT = "gmm_service_flat_shape"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an exported graph. ``-1`` in ``shape`` is the batch
    dimension ``N``; ``dtype`` is numpy's name for the element type."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def signature(
    algorithm: str, n_features: int, n_components: int
) -> tuple[TensorSpec, list[TensorSpec]]:
    """The input and the outputs (in the graph's order) of an exported model."""
    points = TensorSpec("points", "float64", (-1, n_features))
    labels = TensorSpec("labels", "int64", (-1,))
    if estimators.is_mixture(algorithm):
        return points, [
            labels,
            TensorSpec("probabilities", "float64", (-1, n_components)),
            TensorSpec("log_likelihood", "float64", (-1,)),
        ]
    return points, [labels, TensorSpec("distances", "float64", (-1, n_components))]


def _converter() -> tuple[Any, Any, Any]:
    """``onnx``, skl2onnx's ``convert_sklearn`` and its ``DoubleTensorType``, or the 501
    that names the extra."""
    try:
        import onnx
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType
    except ImportError as exc:
        raise ExtraNotInstalled(
            f"ONNX export needs the onnx extra, which this server was installed without "
            f"({exc}). The server's operator can add it: {INSTALL_HINT}. The portable "
            "JSON export (format=json) needs nothing more."
        ) from exc
    return onnx, convert_sklearn, DoubleTensorType


def export_onnx(catalogue: Catalogue, model_id: str) -> bytes:
    """The serialized ONNX model (a ``ModelProto``) of a stored model, converted from
    its fitted estimator, so that onnxruntime answers what the model predicts.

    The extra is checked before the model is read: without it no model can be
    exported, whichever is asked for.
    """
    onnx, convert_sklearn, double_tensor = _converter()
    resource = catalogue.stored(model_id)  # the name as it is now, for the metadata
    est = catalogue.loaded(model_id).bundle["estimator"]
    algorithm = resource["algorithm"]
    k, d = estimators.means_of(algorithm, est).shape
    points, outputs = signature(algorithm, d, k)
    mixture = estimators.is_mixture(algorithm)
    model = convert_sklearn(
        est,
        initial_types=[(points.name, double_tensor([None, d]))],
        options={id(est): {"score_samples": True}} if mixture else None,
        target_opset=TARGET_OPSET,
    )
    graph = model.graph
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = BATCH
    if not mixture:
        _clip_before_sqrt(onnx, graph, graph.output[1].name)
    _conform_outputs(onnx, graph, outputs)
    props = {
        "model_id": resource["id"],
        "algorithm": algorithm,
        "n_features": str(d),
        "n_components": str(k),
        "created_at": resource["created_at"],
        "inputs": json.dumps([points.as_json()]),
        "outputs": json.dumps([spec.as_json() for spec in outputs]),
    }
    if mixture:
        props["covariance_type"] = est.covariance_type
    if resource.get("name"):
        props["name"] = resource["name"]
    onnx.helper.set_model_props(model, {METADATA_PREFIX + key: v for key, v in props.items()})
    model.doc_string = _describe(algorithm, est, resource["id"], points, outputs)
    # A graph onnxruntime would refuse fails here, as the server's fault (500), rather
    # than in the user's runtime.
    onnx.checker.check_model(model, full_check=True)
    serialized: bytes = model.SerializeToString()
    return serialized


def _describe(
    algorithm: str, est: Any, model_id: str, points: TensorSpec, outputs: list[TensorSpec]
) -> str:
    """A sentence for people reading the model in a viewer (Netron's "description")."""

    def tensor(spec: TensorSpec) -> str:
        dims = ", ".join(BATCH if n == -1 else str(n) for n in spec.shape)
        return f"{spec.name} {spec.dtype} [{dims}]"

    what = type(est).__name__
    if estimators.is_mixture(algorithm):
        what += f" (covariance_type={est.covariance_type!r})"
        meaning = "predict, predict_proba and score_samples"
    else:
        meaning = "predict and transform"
    return (
        f"{what} from gmm-service model {model_id}. Input {tensor(points)}; outputs "
        f"{', '.join(tensor(spec) for spec in outputs)}: scikit-learn's {meaning}."
    )


def _names(graph: Any) -> set[str]:
    """Every tensor name the graph uses."""
    names = {t.name for t in (*graph.input, *graph.output, *graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(graph: Any, stem: str) -> str:
    """A tensor name the graph does not use yet."""
    names, i = _names(graph), 0
    while f"{stem}_{i}" in names:
        i += 1
    return f"{stem}_{i}"


def _clip_before_sqrt(onnx: Any, graph: Any, distances: str) -> None:
    """``Sqrt(s)`` -> ``Sqrt(Relu(s))`` where ``s`` is the squared distance, as sklearn's
    ``euclidean_distances`` clips it at 0. A graph whose distances come from something
    other than a ``Sqrt`` is left alone (tests/api/test_onnx.py then says whether a
    point at a center still answers NaN)."""
    for i, node in enumerate(graph.node):
        if distances in node.output and node.op_type == "Sqrt":
            clipped = _fresh(graph, "gmm_service_clipped")
            relu = onnx.helper.make_node(
                "Relu", [node.input[0]], [clipped], name=_fresh(graph, "gmm_service_clip")
            )
            node.input[0] = clipped
            graph.node.insert(i, relu)  # nodes are in topological order
            return


def _conform_outputs(onnx: Any, graph: Any, wanted: list[TensorSpec]) -> None:
    """Give the converter's outputs the names, shapes and order of ``wanted``: rank-1
    outputs through a ``Reshape`` to ``[N]``, the others renamed in place."""
    produced = [output.name for output in graph.output]
    if len(produced) != len(wanted):
        raise RuntimeError(
            f"skl2onnx produced the outputs {produced}; expected {len(wanted)} "
            f"({[spec.name for spec in wanted]})"
        )
    taken = _names(graph)
    element = {"float64": onnx.TensorProto.DOUBLE, "int64": onnx.TensorProto.INT64}
    del graph.output[:]
    for old, spec in zip(produced, wanted, strict=True):
        if spec.name != old and spec.name in taken:
            raise RuntimeError(f"the converted graph already has a tensor {spec.name!r}")
        if len(spec.shape) == 1:
            if _FLAT not in taken:
                graph.initializer.append(
                    onnx.helper.make_tensor(_FLAT, onnx.TensorProto.INT64, [1], [-1])
                )
                taken.add(_FLAT)
            graph.node.append(
                onnx.helper.make_node(
                    "Reshape", [old, _FLAT], [spec.name], name=f"gmm_service_{spec.name}"
                )
            )
        elif spec.name != old:
            for node in graph.node:
                for names in (node.input, node.output):
                    for j, name in enumerate(names):
                        if name == old:
                            names[j] = spec.name
        shape = [BATCH if n == -1 else n for n in spec.shape]
        graph.output.append(
            onnx.helper.make_tensor_value_info(spec.name, element[spec.dtype], shape)
        )

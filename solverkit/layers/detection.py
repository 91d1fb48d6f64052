"""Detection layers: the SSD fork's Normalize, Permute, PriorBox and DetectionOutput, and
Fast R-CNN's ROIPooling (each with its fork's fields, defaults and semantics).

An SSD head is ``Normalize`` on an early feature map, per-map ``Convolution -> Permute
(0, 2, 3, 1) -> Flatten`` for box offsets and class scores, one ``PriorBox`` per map,
``Concat`` of each, ``Softmax`` over classes, and ``DetectionOutput`` to decode the
offsets against the priors and keep the boxes non-maximum suppression leaves.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams, StrictModel
from .base import Layer

logger = logging.getLogger("solverkit")


# ---------------------------------------------------------------- Normalize

@register_layer("Normalize")
class Normalize(Layer):
    """L2 normalisation with a learned scale (the SSD fork's NormalizeLayer).

    x: (N, C, H, W) -> y of the same shape. ``across_spatial``: one norm per sample,
    ``n = sqrt(Σ_{c,h,w} x² + eps)``; otherwise one per pixel, ``n = sqrt(Σ_c x² + eps)``.
    ``y = s_c · x / n`` with the scale blob s of shape (1,) (``channel_shared``) or (C,),
    filled by ``scale_filler`` (constant 1 by default). Backward:
    ``dx = s·dy/n − x·Σ(s·dy·x)/n³`` (the sum over the norm's elements) and
    ``ds_c = Σ dy·x/n`` over the elements of channel c (all elements when shared).
    """

    class Params(LayerParams):
        across_spatial: bool = Field(True, description="one norm per sample (else per pixel, "
                                     "over the channels)")
        channel_shared: bool = Field(True, description="one scale for all channels (else one "
                                     "per channel)")
        eps: float = Field(1e-10, ge=0, description="added to the sum of squares")
        scale_filler: FillerSpec | None = Field(None, description="the scale's filler "
                                                "(default constant 1)")
        caffe_written: ClassVar[tuple[str, ...]] = ("across_spatial", "channel_shared", "eps")

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2:
            raise self.error(f"bottom must have a channel axis (N, C, ...), got shape {shape}",
                             field="bottom")
        filler = self.params.scale_filler or FillerSpec(type="constant", value=1.0)
        self.make_param((1,) if self.params.channel_shared else (shape[1],), filler, "scale")

    def reshape(self, bottom, top):
        if bottom[0].shape[1:2] != self.blobs[0].shape and not self.params.channel_shared:
            raise self.error(f"bottom '{bottom[0].name}' has {bottom[0].shape[1]} channels but "
                             f"the scale has {self.blobs[0].shape[0]}", field="bottom")
        top[0].reshape(bottom[0].shape)

    def _axes(self, ndim):
        return tuple(range(1, ndim)) if self.params.across_spatial else (1,)

    def _scale(self, ndim):
        scale = self.blobs[0].data
        return scale.reshape((1, -1) + (1,) * (ndim - 2)) if ndim > 2 else scale.reshape(1, -1)

    def forward(self, bottom, top):
        x = bottom[0].data
        norm = np.sqrt(np.sum(x * x, axis=self._axes(x.ndim), keepdims=True) + self.params.eps)
        self.norm = norm
        np.multiply(x / norm, self._scale(x.ndim), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        x, dy, norm = bottom[0].data, top[0].diff, self.norm
        normalized = x / norm
        if self.param_propagate_down[0]:
            product = dy * normalized
            if self.params.channel_shared:
                self.blobs[0].diff += product.sum()
            else:
                self.blobs[0].diff += product.sum(axis=(0, *range(2, x.ndim)))
        if propagate_down[0]:
            scaled = dy * self._scale(x.ndim)
            inner = np.sum(scaled * normalized, axis=self._axes(x.ndim), keepdims=True)
            bottom[0].diff[...] = (scaled - normalized * inner) / norm


# ---------------------------------------------------------------- Permute

@register_layer("Permute")
class Permute(Layer):
    """Reorder the axes (the SSD fork's PermuteLayer): ``y = x.transpose(order)``.

    ``order`` lists axes of the bottom, each once; the axes it leaves out follow in their
    own order (``order: [0, 2]`` on 4 axes is (0, 2, 1, 3)), as the fork completes it.
    Backward applies the inverse permutation.
    """

    class Params(LayerParams):
        order: list[int] = Field(default_factory=list, description="the bottom's axes in the "
                                 "top's order; axes left out follow in their order")

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        ndim = len(bottom[0].shape)
        order = []
        for axis in self.params.order:
            if not -ndim <= axis < ndim:
                raise self.error(f"axis {axis} in order is out of range for a bottom with "
                                 f"{ndim} axes", field="order")
            if axis % ndim in order:
                raise self.error(f"axis {axis} is given twice in order", field="order")
            order.append(axis % ndim)
        order += [axis for axis in range(ndim) if axis not in order]
        self.order = tuple(order)
        self.inverse = tuple(np.argsort(order))
        top[0].reshape(tuple(bottom[0].shape[a] for a in order))

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.transpose(self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.transpose(self.inverse)


# ---------------------------------------------------------------- PriorBox

@register_layer("PriorBox")
class PriorBox(Layer):
    """Default boxes of one feature map (the SSD fork's PriorBoxLayer); no backward.

    Bottoms: the feature map (N, C, H, W) and the image (N, 3, IH, IW). Top (1, 2, H·W·P·4):
    channel 0 the boxes (xmin, ymin, xmax, ymax) divided by the image size, channel 1 their
    variances. At cell (h, w) the centre is ``((w + offset)·step_w, (h + offset)·step_h)``;
    the image size is ``img_size`` or ``img_h``/``img_w`` (else the second bottom's) and the
    step ``step`` or ``step_h``/``step_w`` (else image size / map size). For each
    ``min_size`` m (with ``max_size`` M at the same position): a square of side m, a square
    of side sqrt(m·M), then for each aspect ratio r ≠ 1 a box m·sqrt(r) wide and
    m/sqrt(r) high. The ratios are 1, then ``aspect_ratio`` without repeats, each followed
    by 1/r with ``flip``; so P = len(ratios)·len(min_size) + len(max_size). ``clip`` limits
    the coordinates to [0, 1]; ``variance`` gives one value or four (default 0.1).
    """

    class Params(LayerParams):
        min_size: list[float] = Field(default_factory=list, description="box sizes in pixels "
                                      "(required)")
        max_size: list[float] = Field(default_factory=list, description="one per min_size: "
                                      "adds a square of side sqrt(min·max)")
        aspect_ratio: list[float] = Field(default_factory=list, description="width/height "
                                          "ratios besides 1 (repeats ignored)")
        flip: bool = Field(True, description="each ratio r also as 1/r")
        clip: bool = Field(False, description="limit the boxes to [0, 1]")
        variance: list[float] = Field(default_factory=list, description="one or four values "
                                      "(default 0.1)")
        img_size: int | None = Field(None, gt=0, description="image size (default: the "
                                     "second bottom's)")
        img_h: int | None = Field(None, gt=0)
        img_w: int | None = Field(None, gt=0)
        step: float | None = Field(None, gt=0, description="pixels between cell centres "
                                   "(default: image size / map size)")
        step_h: float | None = Field(None, gt=0)
        step_w: float | None = Field(None, gt=0)
        offset: float = Field(0.5, description="the centre's offset in a cell, in steps")
        # OpenCV's reader defaults clip to true: write both flags whatever their value
        caffe_written: ClassVar[tuple[str, ...]] = ("flip", "clip")

    min_bottoms = max_bottoms = 2
    min_tops = max_tops = 1
    has_backward = False

    def setup(self, bottom, top):
        p = self.params
        if not p.min_size:
            raise self.error("min_size is required (one or more box sizes in pixels)",
                             field="min_size")
        if any(m <= 0 for m in p.min_size):
            raise self.error("every min_size must be positive", field="min_size")
        if p.max_size and len(p.max_size) != len(p.min_size):
            raise self.error(f"max_size gives {len(p.max_size)} values for "
                             f"{len(p.min_size)} min_size values (give one per min_size)",
                             field="max_size")
        for m, big in zip(p.min_size, p.max_size):
            if big <= m:
                raise self.error(f"max_size {big:g} must be larger than min_size {m:g}",
                                 field="max_size")
        ratios = [1.0]
        for r in p.aspect_ratio:
            if r <= 0:
                raise self.error(f"aspect_ratio {r:g} must be positive", field="aspect_ratio")
            if any(abs(r - known) < 1e-6 for known in ratios):
                continue
            ratios.append(r)
            if p.flip:
                ratios.append(1.0 / r)
        self.ratios = ratios
        self.num_priors = len(ratios) * len(p.min_size) + len(p.max_size)
        if len(p.variance) not in (0, 1, 4):
            raise self.error(f"variance takes one value or four, got {len(p.variance)}",
                             field="variance")
        if any(v <= 0 for v in p.variance):
            raise self.error("every variance must be positive", field="variance")
        for name in ("img", "step"):
            single = getattr(p, "img_size" if name == "img" else "step")
            pair = (getattr(p, f"{name}_h"), getattr(p, f"{name}_w"))
            field = "img_size" if name == "img" else "step"
            if single is not None and any(v is not None for v in pair):
                raise self.error(f"give {field} or {name}_h/{name}_w, not both", field=field)
            if (pair[0] is None) != (pair[1] is None):
                raise self.error(f"give both {name}_h and {name}_w", field=f"{name}_h")

    def allow_backward_to(self, bottom_index: int) -> bool:
        return False

    def reshape(self, bottom, top):
        for blob in bottom:
            if len(blob.shape) != 4:
                raise self.error(f"bottom '{blob.name}' must be 4-d (N, C, H, W), got shape "
                                 f"{blob.shape}", field="bottom")
        height, width = bottom[0].shape[2:]
        top[0].reshape((1, 2, height * width * self.num_priors * 4))
        self._priors = None                  # the boxes depend on the shapes only

    def priors(self, map_hw, image_hw) -> np.ndarray:
        """(2, H·W·P·4): the boxes, then their variances, for a map and image of these sizes."""
        p = self.params
        height, width = map_hw
        img_h = p.img_h or p.img_size or image_hw[0]
        img_w = p.img_w or p.img_size or image_hw[1]
        step_h = p.step_h or p.step or img_h / height
        step_w = p.step_w or p.step or img_w / width
        sizes = []                           # (box width, box height) in prior order
        for j, m in enumerate(p.min_size):
            sizes.append((m, m))
            if p.max_size:
                side = np.sqrt(m * p.max_size[j])
                sizes.append((side, side))
            for r in self.ratios[1:]:
                sizes.append((m * np.sqrt(r), m / np.sqrt(r)))
        sizes = np.asarray(sizes, dtype=np.float64)                        # (P, 2)
        cy, cx = np.meshgrid((np.arange(height) + p.offset) * step_h,
                             (np.arange(width) + p.offset) * step_w, indexing="ij")
        cx = cx.reshape(-1, 1)
        cy = cy.reshape(-1, 1)
        half_w, half_h = sizes[:, 0] / 2, sizes[:, 1] / 2
        boxes = np.stack([(cx - half_w) / img_w, (cy - half_h) / img_h,
                          (cx + half_w) / img_w, (cy + half_h) / img_h], axis=-1)  # (HW, P, 4)
        if p.clip:
            np.clip(boxes, 0.0, 1.0, out=boxes)
        variance = p.variance or [0.1]
        variances = np.broadcast_to(np.asarray(variance * (4 // len(variance))), boxes.shape)
        return np.stack([boxes.reshape(-1), variances.reshape(-1)])

    def forward(self, bottom, top):
        if self._priors is None:
            self._priors = self.priors(bottom[0].shape[2:], bottom[1].shape[2:])
        top[0].data[0] = self._priors

    def backward(self, top, propagate_down, bottom):
        """The priors depend on the shapes only: no gradient."""


# ---------------------------------------------------------------- DetectionOutput

class NmsParams(StrictModel):
    """The SSD fork's NonMaximumSuppressionParameter."""

    nms_threshold: float = Field(0.3, ge=0, description="a box overlapping a kept one by "
                                 "more (IoU) is dropped")
    top_k: int | None = Field(None, description="candidates per class before NMS (default: "
                              "all)")
    eta: float = Field(1.0, gt=0, le=1, description="the threshold's factor after each kept "
                       "box while above 0.5")


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray, code_type: str,
                 variance_encoded_in_target: bool) -> np.ndarray:
    """Boxes (..., P, 4) as (xmin, ymin, xmax, ymax) from offsets ``loc`` (..., P, 4) against
    ``priors`` (P, 4) with ``variances`` (P, 4), the SSD fork's ``DecodeBBox``:

    - CORNER: ``prior + v·loc``;
    - CENTER_SIZE: centre ``prior_c + v·loc_xy·prior_wh``, size ``prior_wh·exp(v·loc_wh)``;
    - CORNER_SIZE: ``prior + v·loc·(w, h, w, h)`` of the prior;

    where v is 1 when the variance is encoded in the target.
    """
    scaled = loc if variance_encoded_in_target else loc * variances
    if code_type == "CORNER":
        return priors + scaled
    size = priors[:, 2:] - priors[:, :2]
    if code_type == "CORNER_SIZE":
        return priors + scaled * np.concatenate([size, size], axis=-1)
    centre = (priors[:, :2] + priors[:, 2:]) / 2 + scaled[..., :2] * size
    half = size * np.exp(scaled[..., 2:]) / 2
    return np.concatenate([centre - half, centre + half], axis=-1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of normalised boxes (..., 4); 0 for a box whose max is below its min."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), 0.0, w * h)


def pairwise_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of each box of ``a`` (K, 4) with each of ``b`` (M, 4): (K, M).
    Boxes that do not overlap (touching included) have 0."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((width >= 0) & (height >= 0), width * height, 0.0)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def jaccard(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (4,) with each of ``boxes`` (K, 4)."""
    return pairwise_jaccard(box[None], boxes)[0]


# candidates up to this many get their overlaps as one matrix (8 MiB of float64)
_PAIRWISE_LIMIT = 1024


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, top_k: int | None,
        eta: float, confidence: float) -> np.ndarray:
    """The SSD fork's ``ApplyNMSFast``: indices of the boxes kept, best first.

    Candidates score above ``confidence``, sorted by score (ties keep index order), at most
    ``top_k``; a candidate is kept when its overlap with every box kept before it is at
    most the threshold, which is multiplied by ``eta`` after each kept box while above 0.5.
    """
    order = np.flatnonzero(scores > confidence)
    order = order[np.argsort(-scores[order], kind="stable")]
    if top_k is not None and top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    candidates = boxes[order]
    if eta >= 1:                        # a fixed threshold: each kept box suppresses the rest
        alive = np.ones(order.size, dtype=bool)
        overlaps = pairwise_jaccard(candidates, candidates) \
            if order.size <= _PAIRWISE_LIMIT else None
        for i in range(order.size):
            if not alive[i]:
                continue
            kept.append(order[i])
            row = overlaps[i] if overlaps is not None else jaccard(candidates[i], candidates)
            alive &= row <= threshold
        return np.asarray(kept, dtype=np.int64)
    adaptive = threshold
    for index in order:
        if kept and np.any(jaccard(boxes[index], boxes[kept]) > adaptive):
            continue
        kept.append(index)
        if adaptive > 0.5:
            adaptive *= eta
    return np.asarray(kept, dtype=np.int64)


@register_layer("DetectionOutput")
class DetectionOutput(Layer):
    """Decode box offsets against priors and keep the best boxes per class (the SSD fork's
    DetectionOutputLayer at inference; no backward).

    Bottoms: loc (N, P·L·4) with L = 1 (``share_location``) or ``num_classes``, conf
    (N, P·num_classes) (scores after Softmax), priors (1, 2, P·4) from PriorBox. For each
    image and each class but ``background_label_id``: the boxes scoring above
    ``confidence_threshold`` go through non-maximum suppression (``nms_param``); then, with
    ``keep_top_k`` ≥ 0, the image keeps its ``keep_top_k`` best detections. Top (1, 1, D, 7):
    rows ``[image, label, score, xmin, ymin, xmax, ymax]`` in image order, then label order,
    then score order; coordinates relative to the image size. With no detection at all the
    top is (1, 1, N, 7) of −1 with the image index in column 0, as the fork writes it.
    ``save_output_param`` (the fork's result files) is accepted and ignored. ``clip``
    (OpenCV's addition) limits the decoded boxes to [0, 1] before suppression.
    """

    class Params(LayerParams):
        num_classes: int = Field(gt=0, description="classes scored, background included")
        share_location: bool = Field(True, description="one box per prior for all classes "
                                     "(else one per class)")
        background_label_id: int = Field(0, description="the class never reported; -1: none")
        nms_param: NmsParams = Field(default_factory=NmsParams)
        save_output_param: dict[str, Any] | None = Field(
            None, description="the fork's result files: accepted and ignored")
        code_type: Literal["CORNER", "CENTER_SIZE", "CORNER_SIZE"] = Field(
            "CORNER", description="how loc encodes a box against its prior")
        variance_encoded_in_target: bool = Field(False, description="loc already holds "
                                                 "offsets divided by the variances")
        keep_top_k: int = Field(-1, description="detections kept per image after NMS; "
                                "-1: all")
        confidence_threshold: float | None = Field(None, description="scores must exceed it "
                                                   "(default: every box)")
        clip: bool = Field(False, description="limit decoded boxes to [0, 1] before NMS "
                           "(OpenCV's field)")
        # fields OpenCV's reader requires even at their defaults
        caffe_written: ClassVar[tuple[str, ...]] = (
            "share_location", "background_label_id", "nms_param", "code_type", "keep_top_k")

    min_bottoms = max_bottoms = 3
    min_tops = max_tops = 1
    has_backward = False

    def setup(self, bottom, top):
        if self.params.save_output_param is not None:
            logger.info("layer '%s': save_output_param is ignored (detections are the "
                        "layer's top; solverkit predict prints or saves them)", self.name)
        self.num_loc_classes = 1 if self.params.share_location else self.params.num_classes

    def allow_backward_to(self, bottom_index: int) -> bool:
        return False

    def reshape(self, bottom, top):
        loc, conf, prior = (b.shape for b in bottom)
        if len(prior) != 3 or prior[:2] != (1, 2) or prior[2] % 4:
            raise self.error(f"the third bottom must be PriorBox's (1, 2, P·4), got shape "
                             f"{prior}", field="bottom")
        self.num_priors = prior[2] // 4
        n = loc[0]
        expect_loc = self.num_priors * self.num_loc_classes * 4
        expect_conf = self.num_priors * self.params.num_classes
        if int(np.prod(loc[1:])) != expect_loc:
            raise self.error(f"loc '{bottom[0].name}' holds {int(np.prod(loc[1:]))} values per "
                             f"image; {self.num_priors} priors need {expect_loc}",
                             field="share_location")
        if conf[0] != n or int(np.prod(conf[1:])) != expect_conf:
            raise self.error(f"conf '{bottom[1].name}' has shape {conf}; {n} images of "
                             f"{self.num_priors} priors × {self.params.num_classes} classes "
                             f"need {expect_conf} values each", field="num_classes")
        if not -1 <= self.params.background_label_id < self.params.num_classes:
            raise self.error(f"background_label_id {self.params.background_label_id} is not "
                             f"a class (0..{self.params.num_classes - 1}, or -1 for none)",
                             field="background_label_id")
        top[0].reshape((1, 1, n, 7))             # the true count is known after forward

    def detect(self, loc, conf, prior) -> np.ndarray:
        """The (D, 7) detections of a batch: loc (N, P·L·4), conf (N, P·C), prior (2, P·4)."""
        p = self.params
        n, classes = loc.shape[0], p.num_classes
        priors = prior[0].reshape(-1, 4).astype(np.float64)
        variances = prior[1].reshape(-1, 4).astype(np.float64)
        offsets = loc.reshape(n, self.num_priors, self.num_loc_classes, 4).astype(np.float64)
        boxes = decode_boxes(offsets.transpose(0, 2, 1, 3), priors, variances, p.code_type,
                             p.variance_encoded_in_target)                  # (N, L, P, 4)
        if p.clip:
            np.clip(boxes, 0.0, 1.0, out=boxes)
        scores = conf.reshape(n, self.num_priors, classes).astype(np.float64)
        confidence = -np.inf if p.confidence_threshold is None else p.confidence_threshold
        rows = []
        for image in range(n):
            found = []                                     # (label, score, box) per kept box
            for label in range(classes):
                if label == p.background_label_id:
                    continue
                class_boxes = boxes[image, 0 if p.share_location else label]
                class_scores = scores[image, :, label]
                kept = nms(class_boxes, class_scores, p.nms_param.nms_threshold,
                           p.nms_param.top_k, p.nms_param.eta, confidence)
                found.extend((label, class_scores[k], class_boxes[k]) for k in kept)
            if p.keep_top_k > -1 and len(found) > p.keep_top_k:
                best = np.argsort([-s for _, s, _ in found], kind="stable")[:p.keep_top_k]
                best = sorted(best, key=lambda j: (found[j][0], -found[j][1]))
                found = [found[j] for j in best]
            rows.extend([image, label, score, *box] for label, score, box in found)
        if not rows:
            empty = np.full((n, 7), -1.0)
            empty[:, 0] = np.arange(n)
            return empty
        return np.asarray(rows, dtype=np.float64)

    def forward(self, bottom, top):
        detections = self.detect(bottom[0].data.reshape(bottom[0].shape[0], -1),
                                 bottom[1].data.reshape(bottom[1].shape[0], -1),
                                 bottom[2].data[0])
        top[0].reshape((1, 1, detections.shape[0], 7))
        top[0].data[0, 0] = detections

    def backward(self, top, propagate_down, bottom):
        """Detections are not differentiable: no gradient."""


# ---------------------------------------------------------------- ROIPooling

def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@register_layer("ROIPooling")
class ROIPooling(Layer):
    """Max pooling of regions into a fixed grid (Fast R-CNN's ROIPoolingLayer).

    Bottoms: features (N, C, H, W) and regions (R, 5) as ``[image, x1, y1, x2, y2]`` in image
    pixels. Top (R, C, pooled_h, pooled_w). A region's corners are ``round(x·spatial_scale)``
    on the map, its size ``max(end − start + 1, 1)``; bin (i, j) spans rows
    ``floor(i·h/pooled_h) .. ceil((i+1)·h/pooled_h)`` from the region's start (clipped to
    the map) and likewise columns; its value is the bin's maximum (the first in row-major
    order on ties), 0 for an empty bin. Backward routes each bin's gradient to its maximum.
    """

    class Params(LayerParams):
        pooled_h: int = Field(0, ge=0, description="rows of the output grid (required)")
        pooled_w: int = Field(0, ge=0, description="columns of the output grid (required)")
        spatial_scale: float = Field(1.0, description="feature-map cells per image pixel")

    min_bottoms = max_bottoms = 2
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        for name in ("pooled_h", "pooled_w"):
            if getattr(self.params, name) <= 0:
                raise self.error(f"{name} must be positive", field=name)

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        if len(bottom[0].shape) != 4:
            raise self.error(f"bottom '{bottom[0].name}' must be 4-d (N, C, H, W), got shape "
                             f"{bottom[0].shape}", field="bottom")
        rois = bottom[1].shape
        if len(rois) < 2 or rois[1] != 5 or int(np.prod(rois[2:])) != 1:
            raise self.error(f"the regions '{bottom[1].name}' must be (R, 5) rows of [image, "
                             f"x1, y1, x2, y2], got shape {rois}", field="bottom")
        top[0].reshape((rois[0], bottom[0].shape[1], self.params.pooled_h, self.params.pooled_w))

    def _bins(self, rois, height, width):
        """(start, end) rows (R, PH) and columns (R, PW) of every bin, clipped to the map."""
        p = self.params
        corners = _round_half_away(rois[:, 1:5] * p.spatial_scale).astype(np.int64)
        x1, y1, x2, y2 = corners.T
        roi_h = np.maximum(y2 - y1 + 1, 1).astype(np.float64)
        roi_w = np.maximum(x2 - x1 + 1, 1).astype(np.float64)

        def spans(start, size, pooled, limit):
            cells = np.arange(pooled)
            bin_size = (size / pooled)[:, None]
            lo = np.floor(cells * bin_size).astype(np.int64) + start[:, None]
            hi = np.ceil((cells + 1) * bin_size).astype(np.int64) + start[:, None]
            return np.clip(lo, 0, limit), np.clip(hi, 0, limit)
        return spans(y1, roi_h, p.pooled_h, height), spans(x1, roi_w, p.pooled_w, width)

    def forward(self, bottom, top):
        x = bottom[0].data
        n, c, height, width = x.shape
        rois = bottom[1].data.reshape(-1, 5).astype(np.float64)
        image = rois[:, 0].astype(np.int64)
        bad = (image < 0) | (image >= n) | (image != rois[:, 0])
        if np.any(bad):
            raise self.error(f"a region names image {rois[bad, 0][0]:g}, not one of the "
                             f"batch's {n} (0..{n - 1})", field="bottom")
        (h_lo, h_hi), (w_lo, w_hi) = self._bins(rois, height, width)
        r = rois.shape[0]
        best = np.full((r, c, h_lo.shape[1], w_lo.shape[1]), -np.inf, dtype=x.dtype)
        argmax = np.full(best.shape, -1, dtype=np.int64)
        channel = np.arange(c)[None, :, None, None]
        image_index = image[:, None, None, None]
        # loop over offsets inside a bin (like a kernel's), vectorised over regions and bins
        for dh in range(int((h_hi - h_lo).max(initial=0))):
            row = h_lo + dh                                              # (R, PH)
            row_ok = row < h_hi
            for dw in range(int((w_hi - w_lo).max(initial=0))):
                col = w_lo + dw                                          # (R, PW)
                ok = row_ok[:, None, :, None] & (col < w_hi)[:, None, None, :]
                rr = np.minimum(row, height - 1)[:, None, :, None]
                cc = np.minimum(col, width - 1)[:, None, None, :]
                values = x[image_index, channel, rr, cc]
                better = ok & (values > best)
                best = np.where(better, values, best)
                argmax = np.where(better, rr * width + cc, argmax)
        empty = argmax < 0
        best[empty] = 0
        self.argmax = argmax
        self.image = image
        top[0].data[...] = best

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, height, width = bottom[0].shape
        dx = bottom[0].diff.reshape(n, c, height * width)
        dx[...] = 0
        found = self.argmax >= 0
        image = np.broadcast_to(self.image[:, None, None, None], self.argmax.shape)
        channel = np.broadcast_to(np.arange(c)[None, :, None, None], self.argmax.shape)
        np.add.at(dx, (image[found], channel[found], self.argmax[found]), top[0].diff[found])

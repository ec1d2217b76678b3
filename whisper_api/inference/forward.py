"""Whisper's text decoder, forward pass only, over the transformers weights, with a static cache.

transformers' decoder layers are general (training, caches of every kind, eager or fused
attention): around the arithmetic, a decoding step dispatches about as many views, casts and
no-op dropouts as it does maths, and on a GPU every dispatch costs (on DirectML, a lot). This
pass does the same arithmetic with the fewest operations: the hidden state of a step is 2-D
(rows, width), every projection is one `addmm` on a transposed view made once, the query, key
and value projections are one fused matrix (the module's own weights become views of it, so no
memory is added), the self-attention cache is preallocated and written in place, and the
encoder's keys and values are projected once per batch of chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .attention import attention_function
from .quantization import Projection, projection, qkv_projection, vocabulary_projection


@dataclass
class LayerWeights:
    self_norm: tuple[torch.Tensor, torch.Tensor]
    qkv: Projection  # query, key and value projections fused: (width -> 3 * width)
    self_out: Projection
    cross_norm: tuple[torch.Tensor, torch.Tensor]
    cross_query: Projection
    cross_key: Projection
    cross_value: Projection
    cross_out: Projection
    mlp_norm: tuple[torch.Tensor, torch.Tensor]
    fc1: Projection
    fc2: Projection


def _norm(layer_norm) -> tuple[torch.Tensor, torch.Tensor]:
    return layer_norm.weight.data, layer_norm.bias.data


@dataclass
class StepBuffers:
    """Where a step's projections are written (`out=`), with the attention's views of them made
    once: reshaping a fresh result instead would cost an operation per projection per layer."""

    qkv: torch.Tensor  # (rows, 3 * width): query, key, value of the self-attention
    query: torch.Tensor  # (rows, heads, 1, head width): a view of qkv
    key_value: torch.Tensor  # (rows, 2 * heads, 1, head width): a view of qkv, as the cache lays them
    cross_query: torch.Tensor  # (rows, width), in the dtype of the encoder's keys and values
    cross_query_heads: torch.Tensor  # (rows, heads, 1, head width): a view of cross_query
    # the cross-attention's result in the model's dtype, where the encoder's keys and values are
    # narrower: (rows, width) and its (rows, heads, 1, head width) view, which a copy converts into
    cross_attended: torch.Tensor
    cross_attended_heads: torch.Tensor

    @classmethod
    def allocate(cls, rows: int, heads: int, head_width: int, like: torch.Tensor,
                 cross_dtype: torch.dtype) -> "StepBuffers":
        """`like`: the model's dtype and device; `cross_dtype`: the encoder keys and values'."""
        width = heads * head_width
        qkv = like.new_empty((rows, 3 * width))
        by_head = qkv.view(rows, 3 * heads, 1, head_width)
        cross_query = like.new_empty((rows, width), dtype=cross_dtype)
        cross_attended = like.new_empty((rows, width))
        return cls(qkv, by_head[:, :heads], by_head[:, heads:], cross_query,
                   cross_query.view(rows, heads, 1, head_width),
                   cross_attended, cross_attended.view(rows, heads, 1, head_width))

    def reallocated(self, rows: int) -> "StepBuffers":
        """Buffers like these for another number of rows."""
        _, heads, _, head_width = self.query.shape
        return StepBuffers.allocate(rows, heads, head_width, self.qkv, self.cross_query.dtype)


# Positions the self-attention reads come in blocks of this many (see Cache.attended).
ATTENDED_BLOCK = 32


@dataclass
class AttendedWindow:
    """Views of a cache's first `span` positions, and the tensors they are views of: once the
    cache holds other tensors (rows left, joined or reordered), the views are stale."""

    span: int
    of_keys: list[torch.Tensor]
    of_visible: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    visible: torch.Tensor

    def made_of(self, span: int, keys: list[torch.Tensor], visible: torch.Tensor) -> bool:
        return span == self.span and keys is self.of_keys and visible is self.of_visible


@dataclass
class RowSlots:
    """Whole tensors with room for `capacity` rows, whose first rows a batch's cache views. Rows
    join into the free slots behind the rows there and leave by the rows behind them moving
    down: the rows that stay are not copied, and no memory is taken anew (copying a batch's
    caches whole at every join and leave took 1.3 s of a 10-minute lecture on two cores, and
    for models of Whisper small's width and up each copy was fresh memory faulted in)."""

    tensors: list[torch.Tensor]  # per-row tensors, in Cache.row_tensors() order

    @property
    def capacity(self) -> int:
        return self.tensors[0].shape[0]


@dataclass
class Cache:
    """Per layer: self-attention keys and values (rows, 2 * heads, positions, head width),
    preallocated, keys in the first half of the heads, values in the second, so that one copy
    writes both; and the encoder's projected keys/values (rows, heads, frames, head width)."""

    self_keys_values: list[torch.Tensor]
    cross_keys: list[torch.Tensor]
    cross_values: list[torch.Tensor]
    # (1, 1, 1, positions) in the model's dtype: 0 where written, -inf ahead. An additive mask:
    # a boolean one is converted to this by scaled_dot_product_attention at every call
    visible: torch.Tensor
    buffers: StepBuffers
    # per layer, the encoder keys of its alignment heads only (word timestamps), made on first use
    alignment_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    # views of self_keys_values, made once
    self_keys: list[torch.Tensor] = field(init=False)
    self_values: list[torch.Tensor] = field(init=False)
    # views of the first positions (see `attended`), with what they were made from
    _window: "AttendedWindow | None" = field(init=False, default=None)
    # where rows join and leave in place (the scheduler's batches: `appended`, `keep_rows`)
    _slots: RowSlots | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._split_self()

    def _split_self(self) -> None:
        heads = self.self_keys_values[0].shape[1] // 2
        self.self_keys = [both[:, :heads] for both in self.self_keys_values]
        self.self_values = [both[:, heads:] for both in self.self_keys_values]

    def attended(self, reach: int | None) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The self-attention's keys, values and visibility a step reads: all positions, or with
        `reach` (no row is written at or past it) the first ATTENDED_BLOCK multiple that covers
        it. A step at position 60 of a 448-position cache then reads 64 positions, not 448 (on a
        CPU, with Whisper base, 9 MB less a row a step); the views are made once a block."""
        positions = self.self_keys_values[0].shape[2]
        if reach is None or reach >= positions:
            return self.self_keys, self.self_values, self.visible
        span = min(-(-reach // ATTENDED_BLOCK) * ATTENDED_BLOCK, positions)
        window = self._window
        if window is None or not window.made_of(span, self.self_keys, self.visible):
            window = self._window = AttendedWindow(
                span, self.self_keys, self.visible, [keys[:, :, :span] for keys in self.self_keys],
                [values[:, :, :span] for values in self.self_values], self.visible[..., :span])
        return window.keys, window.values, window.visible

    @property
    def rows(self) -> int:
        return self.self_keys_values[0].shape[0]

    def per_row_visibility(self) -> None:
        """One visibility row per cache row, so that rows at different positions can share a step
        (the scheduler's batches, where rows join while others decode)."""
        if self.visible.shape[0] != self.rows:
            self.visible = self.visible.expand(self.rows, -1, -1, -1).contiguous()

    def taken(self, rows: torch.Tensor) -> "Cache":
        """A new cache holding `rows` of this one (visibility per row)."""
        return self._of_row_tensors([tensor.index_select(0, rows) for tensor in self.row_tensors()], self)

    def row_tensors(self) -> list[torch.Tensor]:
        """Every tensor with a row per cache row (the visibility made per row first)."""
        self.per_row_visibility()
        return [*self.self_keys_values, *self.cross_keys, *self.cross_values, self.visible]

    @staticmethod
    def _split_row_tensors(tensors: list[torch.Tensor]
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """`row_tensors()` order back to (self keys/values, cross keys, cross values, visibility)."""
        layers = (len(tensors) - 1) // 3
        return tensors[:layers], tensors[layers : 2 * layers], tensors[2 * layers : 3 * layers], tensors[-1]

    @classmethod
    def _of_row_tensors(cls, tensors: list[torch.Tensor], like: "Cache") -> "Cache":
        """A cache of these per-row tensors, its step buffers shaped like `like`'s."""
        self_keys_values, cross_keys, cross_values, visible = cls._split_row_tensors(tensors)
        return cls(self_keys_values=self_keys_values, cross_keys=cross_keys, cross_values=cross_values,
                   visible=visible, buffers=like.buffers.reallocated(visible.shape[0]))

    def _view_slots(self, rows: int) -> None:
        """The cache's tensors become the first `rows` rows of its slots."""
        self.self_keys_values, self.cross_keys, self.cross_values, self.visible = self._split_row_tensors(
            [tensor[:rows] for tensor in self._slots.tensors])
        self._split_self()
        self.alignment_keys.clear()
        if rows != self.buffers.qkv.shape[0]:
            self.buffers = self.buffers.reallocated(rows)

    def _own_slots(self) -> RowSlots:
        """Slots of the cache's own tensors (as many as its rows) if it has none yet."""
        if self._slots is None:
            self._slots = RowSlots(self.row_tensors())
            self._view_slots(self.rows)
        return self._slots

    def appended(self, parts: list["Cache"]) -> bool:
        """The parts' rows written after this cache's rows, in place, if its slots have room."""
        slots, start = self._slots, self.rows
        if slots is None or start + sum(part.rows for part in parts) > slots.capacity:
            return False
        for part in parts:
            end = start + part.rows
            for whole, source in zip(slots.tensors, part.row_tensors()):
                whole[start:end].copy_(source)
            start = end
        self._view_slots(start)
        return True

    def keep_rows(self, indices: list[int]) -> None:
        """Keep rows `indices` (ascending) in place: each moves down to the next slot, so only the
        rows behind a leaving one are copied; the slots keep their room for rows that join."""
        assert all(a < b for a, b in zip(indices, indices[1:])), "rows are kept in their order"
        slots = self._own_slots()
        for destination, source in enumerate(indices):
            if source != destination:  # source > destination: never a row still to be moved
                for whole in slots.tensors:
                    whole[destination].copy_(whole[source])
        self._view_slots(len(indices))

    @classmethod
    def joined(cls, caches: list["Cache"]) -> "Cache":
        """The rows of several caches (same model, same number of positions) as one: in the
        first one's slots where they have room, else in new slots as large as all of them."""
        if len(caches) == 1:
            return caches[0]
        first = caches[0]
        if first.appended(caches[1:]):
            return first
        whole = [torch.cat(tensors) for tensors in zip(*(cache.row_tensors() for cache in caches))]
        cache = cls._of_row_tensors(whole, first)
        cache._slots = RowSlots(whole)
        return cache

    def select(self, rows: torch.Tensor, same_chunks: bool = False) -> None:
        """Keep `rows` in place of the cache's rows (finished rows leave the batch). Beam search
        reorders hypotheses among the rows of one chunk, which share the chunk's encoder keys and
        values: `same_chunks` reorders the self-attention cache only, in place (the views over it
        stay valid)."""
        if same_chunks and rows.shape[0] == self.rows:
            for tensor in self.self_keys_values:
                tensor.copy_(tensor.index_select(0, rows))
            return
        self._slots = None  # new tensors from here on
        kept = (self.self_keys_values,) if same_chunks else (self.self_keys_values, self.cross_keys, self.cross_values)
        for tensors in kept:
            for index, tensor in enumerate(tensors):
                tensors[index] = tensor.index_select(0, rows)
        self._split_self()
        if self.visible.shape[0] > 1:
            self.visible = self.visible.index_select(0, rows)
        if not same_chunks:
            self.alignment_keys.clear()
        if rows.shape[0] != self.buffers.qkv.shape[0]:
            self.buffers = self.buffers.reallocated(rows.shape[0])


class TextDecoder:
    """The decoder stack of one loaded model; holds no per-request state.

    `cross_dtype`: the dtype the encoder's keys and values are kept in, the model's own unless
    given (int8 weights: `quantization.INT8_ENCODER_KEYS_DTYPE`)."""

    def __init__(self, model, attention: str = "sdpa", cross_dtype: torch.dtype | None = None) -> None:
        self.attend = attention_function(attention)
        self.cross_dtype = cross_dtype or model.dtype
        decoder = model.model.decoder
        config = model.config
        self.width = config.d_model
        self.heads = config.decoder_attention_heads
        self.head_width = self.width // self.heads
        self.embed_scale = (self.width**0.5) if config.scale_embedding else 1.0
        self.output = vocabulary_projection(model)  # first: on CUDA it re-points the (tied) embedding
        self.token_embedding = decoder.embed_tokens.weight.data
        self.positions = decoder.embed_positions.weight.data
        self.final_norm = _norm(decoder.layer_norm)
        self.layers = [self._layer(layer) for layer in decoder.layers]
        self.epsilon = decoder.layer_norm.eps

    @staticmethod
    def _layer(layer) -> LayerWeights:
        cross = layer.encoder_attn
        return LayerWeights(
            self_norm=_norm(layer.self_attn_layer_norm),
            qkv=qkv_projection(layer.self_attn),
            self_out=projection(layer.self_attn.out_proj),
            cross_norm=_norm(layer.encoder_attn_layer_norm),
            cross_query=projection(cross.q_proj),
            cross_key=projection(cross.k_proj), cross_value=projection(cross.v_proj),
            cross_out=projection(cross.out_proj),
            mlp_norm=_norm(layer.final_layer_norm),
            fc1=projection(layer.fc1),
            fc2=projection(layer.fc2),
        )

    def cross_keys_values(self, encoded: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, the encoder states projected to keys and values: (rows, heads, frames, width)."""
        rows, frames, _ = encoded.shape
        cross_keys, cross_values = [], []
        for layer in self.layers:
            for project, target in ((layer.cross_key, cross_keys), (layer.cross_value, cross_values)):
                projected = project(encoded).view(rows, frames, self.heads, self.head_width)
                target.append(projected.transpose(1, 2).to(self.cross_dtype, memory_format=torch.contiguous_format))
        return cross_keys, cross_values

    def load_cross(self, cache: Cache, encoded: torch.Tensor) -> None:
        """Write a new batch's encoder keys and values into an existing cache, in place."""
        cross_keys, cross_values = self.cross_keys_values(encoded)
        for target, source in zip(cache.cross_keys + cache.cross_values, cross_keys + cross_values):
            target.copy_(source)
        cache.alignment_keys.clear()

    def new_cache(self, encoded: torch.Tensor, positions: int) -> Cache:
        rows = encoded.shape[0]
        shape = (rows, 2 * self.heads, positions, self.head_width)
        cross_keys, cross_values = self.cross_keys_values(encoded)
        return Cache(
            self_keys_values=[encoded.new_zeros(shape) for _ in self.layers],
            cross_keys=cross_keys,
            cross_values=cross_values,
            visible=torch.full((1, 1, 1, positions), float("-inf"), dtype=encoded.dtype, device=encoded.device),
            buffers=StepBuffers.allocate(rows, self.heads, self.head_width, encoded, self.cross_dtype),
        )

    def _layer_norm(self, hidden: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(hidden, (self.width,), weights[0], weights[1], self.epsilon)

    def prefill(self, tokens: torch.Tensor, cache: Cache, attention_heads: dict[int, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run the prefix (rows, length) through the decoder, filling cache positions 0..length-1.
        Returns the final hidden states (rows, length, width) and, for the layers in
        `attention_heads`, those heads' cross-attention weights (rows, heads, length, frames)."""
        rows, length = tokens.shape
        hidden = F.embedding(tokens, self.token_embedding) * self.embed_scale + self.positions[:length]
        cache.visible[..., :length] = 0.0
        weights: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            normed = self._layer_norm(hidden, layer.self_norm)
            qkv = layer.qkv(normed).view(rows, length, 3, self.heads, self.head_width)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            cache.self_keys[index][:, :, :length] = key
            cache.self_values[index][:, :, :length] = value
            attended = self.attend(query, key, value, is_causal=True)
            hidden = hidden + layer.self_out(attended.transpose(1, 2).reshape(rows, length, self.width))
            normed = self._layer_norm(hidden, layer.cross_norm)
            query = layer.cross_query(normed)
            query = query.view(rows, length, self.heads, self.head_width).transpose(1, 2).to(self.cross_dtype)
            keys, values = cache.cross_keys[index], cache.cross_values[index]
            attended = self.attend(query, keys, values).to(hidden.dtype)
            if attention_heads and index in attention_heads:
                weights[index] = self.attention_weights(query, cache, index, attention_heads[index])
            hidden = hidden + layer.cross_out(attended.transpose(1, 2).reshape(rows, length, self.width))
            normed = self._layer_norm(hidden, layer.mlp_norm)
            hidden = hidden + layer.fc2(F.gelu(layer.fc1(normed)))
        return self._layer_norm(hidden, self.final_norm), weights

    def attention_weights(self, query: torch.Tensor, cache: Cache, layer: int, heads: torch.Tensor) -> torch.Tensor:
        """Softmaxed cross-attention of the given heads only: (rows, heads, queries, frames)."""
        keys = cache.alignment_keys.get(layer)
        if keys is None:
            keys = cache.alignment_keys[layer] = cache.cross_keys[layer].index_select(1, heads)
        query = query.index_select(1, heads)
        scores = torch.matmul(query, keys.transpose(-1, -2)) * (self.head_width**-0.5)
        return scores.float().softmax(dim=-1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden)

    def step(self, tokens: torch.Tensor, position: torch.Tensor, cache: Cache,
             attention_heads: dict[int, torch.Tensor] | None = None, reach: int | None = None
             ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """One token per row (rows,) at `position`, a long tensor on the device: one element when
        every row is at the same position, else one per row (rows that joined the batch at
        different steps; the cache then has a visibility row per row). `reach`, where the host
        knows it, is one past the highest position written: the self-attention reads no further
        (Cache.attended); a CUDA graph, replayed at every position, reads the whole cache.
        Returns the logits (rows, vocabulary) and, for `attention_heads`' layers, the weights of
        those heads (rows, heads, 1, frames)."""
        rows = tokens.shape[0]
        hidden = torch.embedding(self.token_embedding, tokens)
        if self.embed_scale != 1.0:
            hidden = hidden * self.embed_scale
        hidden = hidden + self.positions.index_select(0, position)
        buffers = cache.buffers
        per_row = position.shape[0] > 1
        if per_row:  # two operations more a step, none more a layer
            where = position.view(rows, 1, 1, 1)
            cache.visible.scatter_(3, where, 0.0)
            where = where.expand(buffers.key_value.shape)
        else:
            cache.visible.index_fill_(3, position, 0.0)
        self_keys, self_values, visible = cache.attended(reach)
        weights: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            normed = F.layer_norm(hidden, (self.width,), layer.self_norm[0], layer.self_norm[1], self.epsilon)
            layer.qkv.into(normed, buffers.qkv)
            if per_row:
                cache.self_keys_values[index].scatter_(2, where, buffers.key_value)
            else:
                cache.self_keys_values[index].index_copy_(2, position, buffers.key_value)
            attended = self.attend(buffers.query, self_keys[index], self_values[index], attn_mask=visible)
            hidden = layer.self_out.plus(attended.view(rows, self.width), hidden)
            normed = F.layer_norm(hidden, (self.width,), layer.cross_norm[0], layer.cross_norm[1], self.epsilon)
            layer.cross_query.into(normed, buffers.cross_query)
            query = buffers.cross_query_heads
            attended = self.attend(query, cache.cross_keys[index], cache.cross_values[index])
            if attention_heads and index in attention_heads:
                weights[index] = self.attention_weights(query, cache, index, attention_heads[index])
            if attended.dtype == hidden.dtype:
                attended = attended.view(rows, self.width)
            else:  # narrower encoder keys and values: converted as it is laid out (no more operations)
                buffers.cross_attended_heads.copy_(attended)
                attended = buffers.cross_attended
            hidden = layer.cross_out.plus(attended, hidden)
            normed = F.layer_norm(hidden, (self.width,), layer.mlp_norm[0], layer.mlp_norm[1], self.epsilon)
            hidden = layer.fc2.plus(F.gelu(layer.fc1(normed)), hidden)
        hidden = F.layer_norm(hidden, (self.width,), self.final_norm[0], self.final_norm[1], self.epsilon)
        return self.output(hidden), weights

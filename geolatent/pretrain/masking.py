"""Modality-aware masking (v1 ``modality_cross_random``), vectorized over the batch.

Roles are :class:`~geolatent.model.tokens.MaskValue` values per token. The strategy, per sample:

1. Per modality, a random split of its tokens: ``floor(N * encode_ratio)`` ENCODER slots,
   ``floor(N * decode_ratio)`` DECODER slots, the rest TARGET_ENCODER_ONLY. Tokens whose bandset
   holds the missing value become MISSING.
2. The present (modality, bandset) pairs are listed. With one pair it is encoded only; with two,
   one (encodable) pair is encoded and the other decoded; otherwise ``k ~ U[min(2, n_enc), n_enc]``
   encoded pairs are drawn among the encodable ones (decode-only modalities excluded) and
   ``m ~ U[1, n_present]`` decoded pairs among all present ones (a pair may be both).
3. ENCODER slots of non-encoded pairs and DECODER slots of non-decoded pairs become
   TARGET_ENCODER_ONLY. A sample left without an encoded (or decoded) token is refilled at random
   from its eligible tokens.

Everything is batched tensor work on the tokens' device (random keys + ranks per sample); the only
Python loops run over the (at most 9) modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geolatent.modalities import Modality, get_modality
from geolatent.model import missing as missing_rule
from geolatent.model.tokens import MaskValue

ENC = int(MaskValue.ONLINE_ENCODER)
TGT = int(MaskValue.TARGET_ENCODER_ONLY)
DEC = int(MaskValue.DECODER)
MIS = int(MaskValue.MISSING)


def missing_tokens(
    modality: str, x: torch.Tensor, patch_size: int, spec: Modality | None = None
) -> torch.Tensor:
    """Which tokens hold no data: the one rule of :func:`geolatent.model.missing.token_missing`
    (a bandset with no valid value in the patch; -99999, NaN and +-inf are missing).

    Args:
        modality: registry name.
        x: ``[B, H, W, T, C]`` input (normalized or raw), H, W divisible by p.
        patch_size: p.
        spec: the model's view of the modality (its bandsets; default: the registry's).

    Returns:
        bool ``[B, H/p, W/p, T, S]``.
    """
    mod = spec or get_modality(modality)
    return missing_rule.token_missing(missing_rule.is_missing(x), patch_size, mod.bandset_slices())


def token_to_pixel_mask(token_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Token roles ``[B, h, w, T, S]`` -> pixel roles ``[B, h*p, w*p, T, S]``."""
    p = patch_size
    return token_mask.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)


@dataclass
class MaskedView:
    """One masked view of a batch.

    Attributes:
        token_mask: per modality int64 ``[B, h, w, T, S]`` :class:`MaskValue` roles.
        encoded_pairs: bool ``[B, P]`` (modality, bandset) pairs chosen for encoding, with P the
            pairs of the batch's modalities in order (``pairs``).
        decoded_pairs: bool ``[B, P]`` pairs chosen for decoding.
        pairs: the ``(modality, bandset index)`` of each column of the pair tensors.
    """

    token_mask: dict[str, torch.Tensor]
    encoded_pairs: torch.Tensor
    decoded_pairs: torch.Tensor
    pairs: list[tuple[str, int]]


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _ranks(keys: torch.Tensor) -> torch.Tensor:
    """Rank of each entry along the last axis (0 = smallest key)."""
    return keys.argsort(dim=-1).argsort(dim=-1)


def _first(flags: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` bool with only the first True of each row of ``flags`` kept."""
    return flags & (flags.cumsum(dim=1) == 1)


def _pick_at_least_one(
    candidates: torch.Tensor, ratio: float, need: torch.Tensor, generator, device
) -> torch.Tensor:
    """Per sample in ``need``, a random subset (each with prob ``ratio``, at least one) of
    ``candidates`` ``[B, N]``; empty for other samples."""
    u = _uniform(tuple(candidates.shape), generator, device)
    keys = torch.where(candidates, u, torch.full_like(u, 2.0))
    first = torch.zeros_like(candidates).scatter_(1, keys.argmin(dim=1, keepdim=True), True)
    chosen = candidates & ((u < ratio) | first)
    return chosen & need[:, None]


def modality_cross_random(
    missing: dict[str, torch.Tensor],
    encode_ratio: float = 0.5,
    decode_ratio: float = 0.5,
    generator: torch.Generator | None = None,
) -> MaskedView:
    """Draw one ``modality_cross_random`` view.

    Args:
        missing: per modality bool ``[B, h, w, T, S]`` (from :func:`missing_tokens`); the keys
            are the batch's modalities. Decode-only modalities (registry ``encoder_input=False``)
            are never encoded.
        encode_ratio, decode_ratio: step-1 fractions of ENCODER and DECODER slots per modality.
        generator: a generator on the same device as the masks, for reproducible draws.

    Returns:
        The :class:`MaskedView`. Every sample with at least one present token of an encodable
        modality gets an encoded token, and every sample with two or more present tokens gets a
        decoded one.
    """
    names = list(missing)
    device = next(iter(missing.values())).device
    bsz = next(iter(missing.values())).shape[0]

    # Step 1: per-modality random split into ENCODER / DECODER / TARGET slots, MISSING on top.
    roles, pair_of_token, encodable_tok, pairs, pair_present = [], [], [], [], []
    for name in names:
        miss = missing[name]
        grid = miss.shape[1:]
        n = miss[0].numel()
        rank = _ranks(_uniform((bsz, n), generator, device))
        n_enc, n_dec = int(n * encode_ratio), int(n * decode_ratio)
        role = torch.full((bsz, n), TGT, dtype=torch.long, device=device)
        role = torch.where(rank < n_enc, ENC, role)
        role = torch.where((rank >= n_enc) & (rank < n_enc + n_dec), DEC, role)
        role = torch.where(miss.reshape(bsz, n), MIS, role)
        roles.append(role)
        s = grid[-1]
        first_pair = len(pairs)
        pairs.extend((name, i) for i in range(s))
        bandset = torch.arange(s, device=device).expand(*grid).reshape(n)
        pair_of_token.append(bandset + first_pair)
        enc_ok = get_modality(name).encoder_input
        encodable_tok.append(torch.full((n,), enc_ok, dtype=torch.bool, device=device))
        pair_present.append((~miss).reshape(bsz, -1, s).any(dim=1))  # [B, S]
    role = torch.cat(roles, dim=1)  # [B, N]
    pair_of_token = torch.cat(pair_of_token)  # [N]
    encodable_tok = torch.cat(encodable_tok)  # [N]
    present = torch.cat(pair_present, dim=1)  # [B, P]
    encodable = torch.tensor(
        [get_modality(m).encoder_input for m, _ in pairs], dtype=torch.bool, device=device
    )  # [P]
    num_pairs = len(pairs)

    # Step 2: choose encoded / decoded pairs with random keys and per-sample counts.
    can_enc = present & encodable
    n_present = present.sum(1)
    n_enc = can_enc.sum(1)
    lo = n_enc.clamp(max=2)
    k = lo + (_uniform((bsz,), generator, device) * (n_enc - lo + 1).float()).long().clamp(
        max=(n_enc - lo).clamp(min=0)
    )
    m = 1 + (_uniform((bsz,), generator, device) * n_present.float()).long().clamp(
        max=(n_present - 1).clamp(min=0)
    )
    enc_keys = torch.where(can_enc, _uniform((bsz, num_pairs), generator, device), 2.0)
    dec_keys = torch.where(present, _uniform((bsz, num_pairs), generator, device), 2.0)
    k = torch.where(n_present <= 2, n_enc.clamp(max=1), k)  # 1 or 2 pairs: one encoded pair
    enc_pairs = can_enc & (_ranks(enc_keys) < k[:, None])
    dec_pairs = present & (_ranks(dec_keys) < m[:, None])
    dec_pairs = torch.where((n_present == 2)[:, None], present & ~enc_pairs, dec_pairs)
    dec_pairs = torch.where((n_present == 1)[:, None], torch.zeros_like(dec_pairs), dec_pairs)

    # Step 3: slots of pairs not chosen for their role become TARGET_ENCODER_ONLY.
    tok_enc = enc_pairs[:, pair_of_token]  # [B, N]
    tok_dec = dec_pairs[:, pair_of_token]
    role = torch.where((role == ENC) & ~tok_enc, TGT, role)
    role = torch.where((role == DEC) & ~tok_dec, TGT, role)

    # Refill samples left without an encoded or decoded token.
    avail = role != MIS
    no_enc = ~(role == ENC).any(1)
    cand = avail & encodable_tok[None, :] & (role == TGT)
    # Rare corner (tiny samples): every encodable token is a decoder slot; borrow from them when
    # the sample keeps another decoded token (one is reserved).
    borrow = no_enc & ~cand.any(1) & ((role == DEC).sum(1) >= 2)
    cand = cand | (borrow[:, None] & encodable_tok[None, :] & (role == DEC) & ~_first(role == DEC))
    role = torch.where(_pick_at_least_one(cand, encode_ratio, no_enc, generator, device), ENC, role)
    no_dec = ~(role == DEC).any(1)
    cand = avail & (role == TGT)
    borrow = no_dec & ~cand.any(1) & ((role == ENC).sum(1) >= 2)
    cand = cand | (borrow[:, None] & (role == ENC) & ~_first(role == ENC))
    role = torch.where(_pick_at_least_one(cand, decode_ratio, no_dec, generator, device), DEC, role)

    out, off = {}, 0
    for name in names:
        n = missing[name][0].numel()
        out[name] = role[:, off : off + n].reshape(missing[name].shape)
        off += n
    return MaskedView(out, enc_pairs, dec_pairs, pairs)

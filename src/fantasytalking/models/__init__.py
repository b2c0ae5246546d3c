"""Backbone: diffusers' Wan transformer with FantasyTalking's cross-attention branches."""

from fantasytalking.models.attention import BranchContext, BranchInput, FantasyTalkingAttnProcessor
from fantasytalking.models.transformer import FantasyTalkingTransformer

__all__ = ["BranchContext", "BranchInput", "FantasyTalkingAttnProcessor", "FantasyTalkingTransformer"]

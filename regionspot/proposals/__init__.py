"""Class-agnostic region proposals, so RegionSpot can name regions without an external detector."""

from regionspot.proposals.auto import (
    AutoProposalConfig,
    ProposalBackboneError,
    Proposals,
    check_auto_config,
    propose_regions,
)

__all__ = ["AutoProposalConfig", "ProposalBackboneError", "Proposals", "check_auto_config", "propose_regions"]

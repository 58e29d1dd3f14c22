"""Difficulty presets of the synthetic phantoms: how strong the lesion contrast, how large the lesions
and how many confounders (bright spots, bias field, noise) a case gets."""

from __future__ import annotations

from dataclasses import dataclass

from strokeseg.errors import DataError

__all__ = ["Difficulty", "DIFFICULTIES", "get_difficulty"]


@dataclass(frozen=True)
class Difficulty:
    """Knobs that one difficulty level sets.

    Args:
        name: ``easy`` | ``standard`` | ``hard``.
        contrast: multiplies the lesion's departure from normal tissue (1 = the nominal tables of
            :mod:`strokeseg.data.phantoms.contrasts`).
        size: multiplies lesion radii.
        noise: multiplies the noise standard deviation.
        bias: amplitude of the multiplicative MR bias field (fraction, peak of |log bias|).
        confounders: inclusive range of the number of bright non-lesion spots on DWI.
        extra_lesion_p: probability of each of up to four additional (mostly small) lesions.
    """

    name: str
    contrast: float
    size: float
    noise: float
    bias: float
    confounders: tuple[int, int]
    extra_lesion_p: float


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", contrast=1.3, size=1.25, noise=0.6, bias=0.03, confounders=(0, 1), extra_lesion_p=0.15),
    "standard": Difficulty(
        "standard", contrast=1.0, size=1.0, noise=1.0, bias=0.06, confounders=(1, 3), extra_lesion_p=0.3
    ),
    "hard": Difficulty("hard", contrast=0.65, size=0.8, noise=1.6, bias=0.12, confounders=(3, 6), extra_lesion_p=0.45),
}


def get_difficulty(name: str) -> Difficulty:
    """Return the preset called ``name``.

    Raises:
        DataError: ``name`` is not one of easy, standard, hard.
    """
    try:
        return DIFFICULTIES[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown difficulty {name!r}; expected one of: {', '.join(DIFFICULTIES)}") from None

# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""LUN numbers: the array's, the kernel's (SAM LUN addressing), and udev's by-path form."""

from __future__ import annotations

from typing import Iterable

# LUN addressing (SAM): how the array's LUN number n becomes the kernel's (Linux's scsilun_to_int, the L of H:C:T:L).
# peripheral ("transparent", os-brick's "SAM"): n.  flat space (os-brick's "SAM3-flat"): 16384 + n (0x40 in the
# first byte).  "sam2" (os-brick's "SAM2"): peripheral below 256, flat from 256.  "auto": the form in which the
# session shows THAT LUN (peripheral n first, then flat 16384 + n); only for a LUN the session does not show yet
# (the LUN an attach scans) is the session's other LUNs' addressing the guess: flat when one is in flat space.
# Another LUN never decides where a LUN that is there is found (a SAM-2 array shows LUN 1 as 1 and LUN 300 flat).
FLAT_BASE = 16384
LUN_ADDRESSING = {"auto": "auto", "peripheral": "peripheral", "transparent": "peripheral", "sam": "peripheral",
                  "flat": "flat", "sam3-flat": "flat", "sam2": "sam2"}


def kernel_lun(lun: int, mode: str, session_luns: Iterable[int] = ()) -> int:
    """The kernel's LUN number of the array's LUN ``lun`` under addressing ``mode`` (see LUN_ADDRESSING)."""
    mode = LUN_ADDRESSING.get(str(mode).lower(), mode)
    if mode == "auto":
        present = set(session_luns)
        if lun in present or lun >= FLAT_BASE:
            return lun
        if FLAT_BASE + lun in present:
            return FLAT_BASE + lun
        mode = "flat" if any(FLAT_BASE <= x < 2 * FLAT_BASE for x in present) else "peripheral"
    if lun >= FLAT_BASE or mode == "peripheral":
        return lun
    if mode == "flat" or (mode == "sam2" and lun >= 256):
        return FLAT_BASE + lun
    return lun


def array_lun(klun: int) -> int:
    """The array's LUN number of a kernel LUN in flat space (16384..32767), else the number itself."""
    return klun - FLAT_BASE if FLAT_BASE <= klun < 2 * FLAT_BASE else klun


def bypath_lun(lun: int) -> str:
    """LUN as udev's path_id writes it: decimal below 256, else ``0x`` + the SAM 8-byte form."""
    if lun < 256:
        return "%d" % lun
    return "0x%04x%04x00000000" % (lun & 0xffff, (lun >> 16) & 0xffff)


def lun_from_bypath(text: str) -> int:
    if text.startswith("0x"):
        h = text[2:]
        return int(h[0:4], 16) | (int(h[4:8], 16) << 16)
    return int(text)

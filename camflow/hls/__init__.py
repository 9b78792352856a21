"""HLS (RFC 8216, version 7, fMP4) in one place: the contract every service reads and writes playlists by.

- ``tags``: tag names, attribute lists, the numbers written (EXTINF, target duration), the audio group;
- ``dates``: PROGRAM-DATE-TIME (and every other ISO 8601 time camflow writes), written and read;
- ``media``: the media playlist model (``MediaPlaylist``, ``Segment``), its writer and its parser;
- ``lowlatency``: the low-latency tags (RFC 8216bis: parts, preload hint, rendition reports, server
  control, delta updates), carried by ``media``; where an LL playlist ends, for the edge;
- ``master``: the master playlist model (``Variant``, ``AudioRendition``), its writer and its parser;
- ``scan``: the edge's fast line scanner (facts for cache lifetimes and the catalog, URI rewriting,
  cutting a live window), for the hot paths where the model's parser is too slow;
- ``rules``: RFC 8216 (and 8216bis LL) rules checked on written text (what a player relies on).

Plain code, no I/O, and no service: the packager, the edge and the recording index use it.
Parsing the model goes through the ``m3u8`` package; ``scan`` is hand-written because the edge
reads every playlist it caches (see its docstring for the figures).
"""

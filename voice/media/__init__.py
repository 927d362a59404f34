"""Media transport: ICE, SRTP keyed end to end, RTP/RTCP on a 20 ms clock, Opus, jitter buffer."""

/* Encode a batch of 20 ms Opus frames in one foreign call (voice/media/opus.py, encode_many).
 *
 * Why: ctypes releases the GIL for each foreign call and the calling thread must win it back
 * afterwards. A codec worker that encodes frame by frame waits for the busy event loop thread
 * once per frame (up to the 5 ms switch interval each time); through this helper it waits once
 * per batch. The frames are encoded exactly as by per-frame opus_encode calls, in order.
 *
 * Memory safety: every bound comes from the Python caller, which allocates the buffers:
 * states[n], pcm[n * frame_samples], out[n * out_cap], lens[n]. The caller holds each state's
 * lock for the whole call (no ctl, no destroy meanwhile); a NULL state is skipped. No
 * allocation here. opus_encode is passed in as a pointer, so the frames are encoded by the very
 * library that created the states (this file does not link libopus; it needs opus.h only).
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime, struct timespec under -std=c99 too */
#include <opus.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef opus_int32 (*encode_fn)(OpusEncoder *, const opus_int16 *, int, unsigned char *,
                                opus_int32);

/* Returns the wall time spent encoding, in nanoseconds; lens[i] is frame i's packet size or a
 * negative libopus error code (OPUS_BAD_ARG for a NULL state). */
int64_t opusbatch_encode(encode_fn encode, int n, OpusEncoder *const *states,
                         const opus_int16 *pcm, int frame_samples, unsigned char *out,
                         opus_int32 out_cap, opus_int32 *lens)
{
    struct timespec began, ended;
    clock_gettime(CLOCK_MONOTONIC, &began);
    for (int i = 0; i < n; i++) {
        if (states[i] == NULL) {
            lens[i] = OPUS_BAD_ARG;
            continue;
        }
        lens[i] = encode(states[i], pcm + (size_t)i * (size_t)frame_samples, frame_samples,
                         out + (size_t)i * (size_t)out_cap, out_cap);
    }
    clock_gettime(CLOCK_MONOTONIC, &ended);
    return (int64_t)(ended.tv_sec - began.tv_sec) * 1000000000 + (ended.tv_nsec - began.tv_nsec);
}

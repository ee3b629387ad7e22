/* The sampler's state, shared with the backends that draw the next token
 * where the logits are (a GPU): they follow the same rules with the same
 * generator and hand the advanced state back. */
#ifndef FASA_SAMPLER_H
#define FASA_SAMPLER_H

#include <stdint.h>

#include "fasa.h"

struct fasa_sampler {
    fasa_sampler_params p;
    int32_t n_vocab;
    uint64_t state; /* splitmix64 */
    struct cand {
        float logit;
        int32_t id;
    } *cand;
    double *prob; /* softmax weights of the sorted candidates */
};

#endif

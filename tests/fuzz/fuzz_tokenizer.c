/*
 * tests/fuzz/fuzz_tokenizer.c — libFuzzer target: BERT's WordPiece
 * tokenizer on arbitrary bytes (UTF-8 validation, normalization, accents,
 * CJK, punctuation, word pieces, truncation) over a small vocabulary.
 */
#include <stdint.h>
#include <string.h>

#include "embed.h"
#include "fuzz_common.h"

static rk_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nmovie\nstar\n##s\n##ing\nwar\n,\n.\n!\na\n##b\n\xe4\xb8\xad\ncafe\n";
    const char *p = rk_fuzz_file((const uint8_t *)vocab, sizeof vocab - 1, ".vocab");
    rk_err e = {0};
    if (rk_tokenizer_open(p, NULL, &tok, &e)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t ids[64];
    int n = 0;
    rk_err e = {0};
    if (rk_tokenizer_encode(tok, (const char *)data, size, 64, ids, &n, &e) == RK_OK) {
        if (n < 2 || n > 64) abort();
        for (int i = 0; i < n; i++)
            if (!rk_tokenizer_token(tok, ids[i])) abort();
    } else if (!e.msg[0]) {
        abort();
    }
    return 0;
}

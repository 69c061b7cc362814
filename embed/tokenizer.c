/*
 * embed/tokenizer.c — BERT's WordPiece tokenizer, as HuggingFace's fast
 * tokenizer (tokenizers' BertNormalizer + BertPreTokenizer + WordPiece +
 * the [CLS] $A [SEP] template) computes it, which is what
 * sentence-transformers feeds all-MiniLM-L6-v2.
 *
 * How it works: one pass over the UTF-8 text, code point by code point,
 * with no allocation (the tokenizer is read-only once opened, so one
 * instance serves any number of threads):
 *
 *   1. clean: drop NUL, U+FFFD and control characters (Cc/Cf/Co/Cs except
 *      TAB/LF/CR); whitespace ends the current word;
 *   2. CJK ideographs (the BERT ranges) become words of their own;
 *   3. strip accents (NFD, then drop Mn) and lower-case, in that order
 *      (HF's BertNormalizer order), through the generated tables of
 *      embed/bert_unicode.c (Unicode version in rk_ucd_version);
 *   4. punctuation (Unicode P* and BERT's ASCII symbol ranges) becomes a
 *      one-character word;
 *   5. each word goes through greedy longest-match-first WordPiece
 *      (Wu et al. 2016, "Google's NMT system", §4.1; continuation pieces
 *      carry "##"); a word longer than max_word_chars characters, or one
 *      that cannot be covered by vocabulary pieces, becomes [UNK].
 *
 * Truncation keeps the first max_len - 2 pieces (HF's truncation of a single
 * sequence), and the rest of the text is still checked for valid UTF-8 so an
 * error does not depend on max_len.
 *
 * The vocabulary is an open-addressing hash table (linear probing, xxh64 of
 * the token bytes) over one arena holding vocab.txt; id = line number, and
 * when a token repeats the last line wins (as HF's load_vocab).
 */
#include <jansson.h>
#include <string.h>

#include "embed.h"
#include "internal.h"

#define WORD_MAX_CHARS 200 /* hard cap on max_word_chars: bounds the stack buffers */

struct rk_tokenizer {
    rk_tokenizer_opts o;
    char *arena;        /* vocab.txt, lines NUL-terminated in place */
    size_t n_tokens;
    const char **tok;   /* [n_tokens] token text, by id */
    uint32_t *tok_len;  /* [n_tokens] */
    uint32_t *ht;       /* [ht_cap], 0 = empty, else id + 1 */
    size_t ht_cap;      /* power of two */
    int32_t cls, sep, pad, unk;
};

/* ---------------------------------------------------------------- vocabulary */

static uint64_t tok_hash(const char *s, size_t n) { return rk_hash64(s, n, 0x9e3779b97f4a7c15ull); }

static int32_t vocab_find(const rk_tokenizer *t, const char *s, size_t n) {
    size_t mask = t->ht_cap - 1;
    for (size_t i = (size_t)tok_hash(s, n) & mask;; i = (i + 1) & mask) {
        uint32_t v = t->ht[i];
        if (!v) return -1;
        uint32_t id = v - 1;
        if (t->tok_len[id] == n && !memcmp(t->tok[id], s, n)) return (int32_t)id;
    }
}

static void vocab_insert(rk_tokenizer *t, uint32_t id) {
    size_t mask = t->ht_cap - 1, n = t->tok_len[id];
    for (size_t i = (size_t)tok_hash(t->tok[id], n) & mask;; i = (i + 1) & mask) {
        uint32_t v = t->ht[i];
        if (!v || (t->tok_len[v - 1] == n && !memcmp(t->tok[v - 1], t->tok[id], n))) {
            t->ht[i] = id + 1; /* a repeated token: the later line wins */
            return;
        }
    }
}

void rk_tokenizer_close(rk_tokenizer *t) {
    if (!t) return;
    rk_free(t->arena);
    rk_free(t->tok);
    rk_free(t->tok_len);
    rk_free(t->ht);
    rk_free(t);
}

static rk_status special(rk_tokenizer *t, const char *path, const char *name, int32_t *id, rk_err *err) {
    *id = vocab_find(t, name, strlen(name));
    if (*id < 0) return rk_fail(err, RK_EFORMAT, "%s: the vocabulary has no '%s' token", path, name);
    return RK_OK;
}

rk_status rk_tokenizer_open(const char *vocab_path, const rk_tokenizer_opts *opts, rk_tokenizer **out,
                            rk_err *err) {
    *out = NULL;
    rk_tokenizer_opts o = RK_TOKENIZER_OPTS_DEFAULT;
    if (opts) o = *opts;
    if (o.strip_accents < 0) o.strip_accents = o.lowercase;
    if (o.max_word_chars < 1 || o.max_word_chars > WORD_MAX_CHARS)
        return rk_fail(err, RK_EINVAL, "tokenizer: max_word_chars %d not in 1..%d", o.max_word_chars, WORD_MAX_CHARS);
    rk_tokenizer *t = rk_calloc(1, sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "%s: out of memory", vocab_path);
    t->o = o;
    size_t len;
    rk_status s = rk_read_file(vocab_path, &t->arena, &len, err);
    if (s != RK_OK) goto fail;
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += t->arena[i] == '\n';
    lines += len && t->arena[len - 1] != '\n';
    if (lines == 0 || lines > (1u << 30)) {
        s = rk_fail(err, RK_EFORMAT, "%s: empty vocabulary", vocab_path);
        goto fail;
    }
    t->tok = rk_malloc(lines * sizeof *t->tok);
    t->tok_len = rk_malloc(lines * sizeof *t->tok_len);
    t->ht_cap = 16;
    while (t->ht_cap < 2 * lines) t->ht_cap <<= 1;
    t->ht = rk_calloc(t->ht_cap, sizeof *t->ht);
    if (!t->tok || !t->tok_len || !t->ht) {
        s = rk_fail(err, RK_ENOMEM, "%s: out of memory", vocab_path);
        goto fail;
    }
    char *p = t->arena, *end = t->arena + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r') n--; /* tolerate CRLF files */
        p[n] = '\0';
        t->tok[t->n_tokens] = p;
        t->tok_len[t->n_tokens] = (uint32_t)n;
        vocab_insert(t, (uint32_t)t->n_tokens);
        t->n_tokens++;
        p = e + 1;
    }
    if ((s = special(t, vocab_path, "[CLS]", &t->cls, err)) || (s = special(t, vocab_path, "[SEP]", &t->sep, err)) ||
        (s = special(t, vocab_path, "[PAD]", &t->pad, err)) || (s = special(t, vocab_path, "[UNK]", &t->unk, err)))
        goto fail;
    *out = t;
    return RK_OK;
fail:
    rk_tokenizer_close(t);
    return s;
}

/* HF's tokenizer_config.json keys: do_lower_case, strip_accents (null =
 * follow do_lower_case), tokenize_chinese_chars. Missing file = defaults. */
rk_status rk_tokenizer_open_dir(const char *dir, rk_tokenizer **out, rk_err *err) {
    char path[1024];
    rk_tokenizer_opts o = RK_TOKENIZER_OPTS_DEFAULT;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (rk_path_exists(path)) {
        json_error_t je;
        json_t *j = json_load_file(path, 0, &je);
        if (!j || !json_is_object(j)) {
            json_decref(j);
            return rk_fail(err, RK_EFORMAT, "%s: not a JSON object (line %d: %s)", path, je.line, j ? "" : je.text);
        }
        json_t *v;
        if ((v = json_object_get(j, "do_lower_case")) && json_is_boolean(v)) o.lowercase = json_is_true(v);
        if ((v = json_object_get(j, "strip_accents")) && json_is_boolean(v)) o.strip_accents = json_is_true(v);
        if ((v = json_object_get(j, "tokenize_chinese_chars")) && json_is_boolean(v)) o.split_cjk = json_is_true(v);
        json_decref(j);
    }
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    return rk_tokenizer_open(path, &o, out, err);
}

size_t rk_tokenizer_vocab_size(const rk_tokenizer *t) { return t->n_tokens; }
int32_t rk_tokenizer_pad_id(const rk_tokenizer *t) { return t->pad; }

const char *rk_tokenizer_token(const rk_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_tokens ? t->tok[id] : NULL;
}

/* ---------------------------------------------------------------- Unicode classes */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static const rk_ucd_map *map_find(const rk_ucd_map *m, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < m[mid].cp) hi = mid;
        else if (cp > m[mid].cp) lo = mid + 1;
        else return &m[mid];
    }
    return NULL;
}

static int is_control(uint32_t cp) {
    if (cp < 0x80) return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7F;
    return in_ranges(rk_ucd_control, rk_ucd_control_n, cp);
}

static int is_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r';
    return in_ranges(rk_ucd_space, rk_ucd_space_n, cp);
}

static int is_punct(uint32_t cp) { return in_ranges(rk_ucd_punct, rk_ucd_punct_n, cp); }

/* The CJK Unified Ideographs blocks BERT splits (tokenization.py,
 * _is_chinese_char): not Hangul, Hiragana or Katakana. */
static int is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* NFD minus Mn of one code point into out[] (<= 4 code points). */
static int strip_cp(uint32_t cp, uint32_t *out) {
    if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllable (Unicode 14, §3.12) */
        uint32_t s = cp - 0xAC00;
        int n = 0;
        out[n++] = 0x1100 + s / 588;
        out[n++] = 0x1161 + (s % 588) / 28;
        if (s % 28) out[n++] = 0x11A7 + s % 28;
        return n;
    }
    if (cp < 0xC0) {
        out[0] = cp;
        return 1;
    }
    const rk_ucd_map *m = map_find(rk_ucd_strip, rk_ucd_strip_n, cp);
    if (!m) {
        out[0] = cp;
        return 1;
    }
    RK_ASSERT(m->len <= 4);
    for (int i = 0; i < m->len; i++) out[i] = rk_ucd_strip_pool[m->off + i];
    return m->len;
}

/* Full lower-case mapping of one code point into out[] (<= 3). */
static int lower_cp(uint32_t cp, uint32_t *out) {
    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    const rk_ucd_map *m = map_find(rk_ucd_lower, rk_ucd_lower_n, cp);
    if (!m) {
        out[0] = cp;
        return 1;
    }
    RK_ASSERT(m->len <= 3);
    for (int i = 0; i < m->len; i++) out[i] = rk_ucd_lower_pool[m->off + i];
    return m->len;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Decode one code point at s[*i], advancing *i; -1 on invalid UTF-8
 * (truncated, overlong, surrogate, > U+10FFFF, stray continuation byte). */
static int32_t utf8_next(const unsigned char *s, size_t len, size_t *i) {
    unsigned char c = s[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    int n;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07, min = 0x10000;
    else return -1;
    if (*i + (size_t)n >= len) return -1; /* truncated sequence */
    for (int k = 1; k <= n; k++) {
        unsigned char d = s[*i + (size_t)k];
        if ((d & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *i += (size_t)n + 1;
    return (int32_t)cp;
}

static int utf8_put(char *p, uint32_t cp) {
    if (cp < 0x80) {
        p[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        p[0] = (char)(0xC0 | (cp >> 6));
        p[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        p[0] = (char)(0xE0 | (cp >> 12));
        p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    p[0] = (char)(0xF0 | (cp >> 18));
    p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---------------------------------------------------------------- tokenizing */

typedef struct {
    const rk_tokenizer *t;
    int32_t *ids;
    int n, cap; /* cap: pieces allowed before [SEP] */
    int full;
    char word[(WORD_MAX_CHARS + 1) * 4]; /* the word's UTF-8 */
    size_t wlen;                          /* bytes in word */
    int wchars;                         /* may exceed max_word_chars (then [UNK]) */
} tk_state;

static void push(tk_state *s, int32_t id) {
    if (s->n < s->cap) s->ids[s->n++] = id;
    else s->full = 1;
}

/* Greedy longest-match-first WordPiece over the current word. */
static void end_word(tk_state *s) {
    if (s->wchars == 0) return;
    const rk_tokenizer *t = s->t;
    if (s->wchars > t->o.max_word_chars) {
        push(s, t->unk);
    } else {
        int32_t pieces[WORD_MAX_CHARS];
        char buf[2 + WORD_MAX_CHARS * 4] = "##"; /* "##" + a continuation piece */
        const char *w = s->word;
        int np = 0;
        size_t start = 0;
        while (start < s->wlen) {
            size_t end = s->wlen;
            int32_t id = -1;
            while (end > start) {
                if (start == 0) {
                    id = vocab_find(t, w, end);
                } else {
                    memcpy(buf + 2, w + start, end - start);
                    id = vocab_find(t, buf, end - start + 2);
                }
                if (id >= 0) break;
                do end--; /* back to the previous character boundary */
                while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
            }
            if (id < 0) { /* no piece fits: the whole word is [UNK] */
                np = -1;
                break;
            }
            pieces[np++] = id;
            start = end;
        }
        if (np < 0) push(s, t->unk);
        else
            for (int i = 0; i < np; i++) push(s, pieces[i]);
    }
    s->wlen = 0;
    s->wchars = 0;
}

static void append(tk_state *s, uint32_t cp) {
    if (s->wchars < s->t->o.max_word_chars + 1) s->wlen += (size_t)utf8_put(s->word + s->wlen, cp);
    s->wchars++; /* past the limit only counted: the word becomes [UNK] */
}

/* A normalized code point: whitespace and punctuation split words. */
static void feed_norm(tk_state *s, uint32_t cp) {
    if (is_space(cp)) {
        end_word(s);
    } else if (is_punct(cp)) {
        end_word(s);
        append(s, cp);
        end_word(s);
    } else {
        append(s, cp);
    }
}

static void feed(tk_state *s, uint32_t cp) {
    const rk_tokenizer_opts *o = &s->t->o;
    if (cp == 0 || cp == 0xFFFD || is_control(cp)) return;
    if (is_space(cp)) {
        end_word(s);
        return;
    }
    int cjk = o->split_cjk && is_cjk(cp);
    if (cjk) end_word(s);
    uint32_t a[4], b[3];
    int na = 1;
    a[0] = cp;
    if (o->strip_accents) na = strip_cp(cp, a);
    for (int i = 0; i < na; i++) {
        int nb = 1;
        b[0] = a[i];
        if (o->lowercase) nb = lower_cp(a[i], b);
        for (int k = 0; k < nb; k++) feed_norm(s, b[k]);
    }
    if (cjk) end_word(s);
}

rk_status rk_tokenizer_encode(const rk_tokenizer *t, const char *text, size_t len, int max_len, int32_t *ids,
                              int *n_ids, rk_err *err) {
    *n_ids = 0;
    if (max_len < 2) return rk_fail(err, RK_EINVAL, "tokenizer: max_len %d < 2 leaves no room for [CLS] and [SEP]", max_len);
    tk_state s;
    s.t = t;
    s.ids = ids + 1;
    s.n = 0;
    s.cap = max_len - 2;
    s.full = 0;
    s.wlen = 0;
    s.wchars = 0;
    ids[0] = t->cls;
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t at = i;
        int32_t cp = utf8_next(u, len, &i);
        if (cp < 0) return rk_fail(err, RK_EINVAL, "invalid UTF-8 at byte %zu", at);
        if (!s.full) feed(&s, (uint32_t)cp);
    }
    if (!s.full) end_word(&s);
    ids[1 + s.n] = t->sep;
    *n_ids = s.n + 2;
    return RK_OK;
}

rk_status rk_tokenizer_encode_batch(const rk_tokenizer *t, const char *const *texts, const size_t *lens, int n,
                                    int max_len, int32_t *ids, uint8_t *mask, int *seq_len, rk_err *err) {
    *seq_len = 0;
    int longest = 0;
    for (int b = 0; b < n; b++) {
        int k;
        size_t len = lens ? lens[b] : strlen(texts[b]);
        rk_status s = rk_tokenizer_encode(t, texts[b], len, max_len, ids + (size_t)b * max_len, &k, err);
        if (s != RK_OK) {
            if (err) rk_err_prefix(err, "text %d", b);
            return s;
        }
        for (int j = 0; j < max_len; j++) mask[(size_t)b * max_len + j] = j < k;
        if (k > longest) longest = k;
    }
    /* Compact rows from stride max_len to stride longest, padding with [PAD]. */
    for (int b = 0; b < n; b++)
        for (int j = 0; j < longest; j++) {
            uint8_t m = mask[(size_t)b * max_len + j];
            int32_t v = m ? ids[(size_t)b * max_len + j] : t->pad;
            ids[(size_t)b * longest + j] = v;
            mask[(size_t)b * longest + j] = m;
        }
    *seq_len = longest;
    return RK_OK;
}

/*
 * embed/image.c — images in: JPEG and PNG bytes -> 8-bit RGB, and the
 * DINOv2 evaluation transform -> the encoder's normalized [3, 224, 224].
 *
 * Decoding uses Debian's libraries: libjpeg-turbo (libjpeg62 API) and
 * libpng 1.6. Both report fatal errors through a callback that must not
 * return; ours longjmp back to the decode function, which frees what it
 * allocated and returns RK_EFORMAT naming the library's message. Every
 * image is converted to RGB the way PIL's convert("RGB") does for the same
 * mode: grey replicated, palette expanded, alpha (and tRNS) dropped without
 * compositing, 16-bit PNG reduced to its high byte. CMYK/YCCK JPEGs are
 * refused (PIL's Adobe-inversion guesswork is not reproduced). A truncated
 * JPEG (libjpeg's "premature end of data" warning, which it would
 * otherwise paper over with grey) is an error, as PIL raises by default.
 *
 * Bounds: the declared width x height is checked against max_pixels BEFORE
 * any pixel buffer exists (a decompression bomb is refused after reading its
 * header), libjpeg's own pool is capped (max_memory_to_use), and libpng's
 * width/height limits are set. Peak memory of decode + preprocess is about
 * 3 B x pixels (RGB) + libjpeg's coefficient buffer for progressive files
 * (<= 6 B x pixels for 4:4:4) + src_height x 224 x 3 B (resize), i.e. under
 * 400 MB at the default 40 Mpx.
 *
 * Transform (torchvision's DINOv2 eval: Resize(256, BICUBIC), CenterCrop(224),
 * ToTensor, Normalize(ImageNet mean/std)) computed the way PIL computes it:
 * Pillow's separable resampling (libImaging/Resample.c: bicubic a = -0.5,
 * support scaled by the reduction factor — i.e. antialiased — coefficients
 * normalized then rounded to 22-bit fixed point, horizontal pass first with
 * a clipped 8-bit intermediate, then vertical). Only the 224 x 224 crop is
 * computed: each output pixel depends only on its own taps, so the crop of
 * the full resize is the same bytes. Output size: shorter side 256, longer
 * int(256 * long / short); crop offset int(round((size - 224) / 2.0)) with
 * Python's round-half-even. Then (v / 255 - mean) / std in float32.
 */
#include <stdio.h> /* before jpeglib.h, which uses FILE and size_t */
#include <jpeglib.h>
#include <jerror.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>

#include "embed.h"

static const float k_mean[3] = {0.485f, 0.456f, 0.406f}, k_std[3] = {0.229f, 0.224f, 0.225f};

void rk_image_free(rk_image *im) {
    if (!im) return;
    rk_free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}

static rk_status check_dims(uint64_t w, uint64_t h, const rk_image_limits *lim, const char *what, rk_err *err) {
    if (w == 0 || h == 0) return rk_fail(err, RK_EFORMAT, "%s: zero-size image (%llux%llu)", what,
                                         (unsigned long long)w, (unsigned long long)h);
    if (w * h > lim->max_pixels)
        return rk_fail(err, RK_ETOOBIG, "%s: %llux%llu pixels is over the limit of %llu pixels", what,
                       (unsigned long long)w, (unsigned long long)h, (unsigned long long)lim->max_pixels);
    return RK_OK;
}

/* ---------------------------------------------------------------- JPEG */

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    int truncated;
} jerr_t;

static void jpeg_fail(j_common_ptr ci) { longjmp(((jerr_t *)ci->err)->jb, 1); }
static void jpeg_emit(j_common_ptr ci, int level) {
    jerr_t *e = (jerr_t *)ci->err;
    if (level < 0 && e->mgr.msg_code == JWRN_JPEG_EOF) e->truncated = 1;
}
static void jpeg_quiet(j_common_ptr ci) { (void)ci; }

static rk_status decode_jpeg(const uint8_t *data, size_t len, const rk_image_limits *lim, rk_image *out, rk_err *err) {
    struct jpeg_decompress_struct ci;
    jerr_t je;
    JSAMPROW row;
    rk_status s = RK_OK;
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_fail;
    je.mgr.emit_message = jpeg_emit;
    je.mgr.output_message = jpeg_quiet;
    if (setjmp(je.jb)) {
        char msg[JMSG_LENGTH_MAX];
        je.mgr.format_message((j_common_ptr)&ci, msg);
        s = rk_fail(err, RK_EFORMAT, "corrupt JPEG: %s", msg);
        goto done;
    }
    jpeg_create_decompress(&ci);
    ci.mem->max_memory_to_use = (long)(8 * lim->max_pixels + (32 << 20));
    jpeg_mem_src(&ci, data, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    if ((s = check_dims(ci.image_width, ci.image_height, lim, "JPEG", err))) goto done;
    if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
        s = rk_fail(err, RK_EFORMAT, "JPEG: CMYK/YCCK colour is not supported (convert the image to RGB)");
        goto done;
    }
    ci.out_color_space = JCS_RGB;
    jpeg_start_decompress(&ci);
    if (ci.output_components != 3) {
        s = rk_fail(err, RK_EFORMAT, "JPEG: %d output components, expected 3", ci.output_components);
        goto done;
    }
    out->rgb = rk_malloc((size_t)ci.output_width * ci.output_height * 3);
    if (!out->rgb) {
        s = rk_fail(err, RK_ENOMEM, "JPEG: out of memory for %ux%u pixels", ci.output_width, ci.output_height);
        goto done;
    }
    out->w = (int)ci.output_width, out->h = (int)ci.output_height;
    while (ci.output_scanline < ci.output_height && !je.truncated) {
        row = out->rgb + (size_t)ci.output_scanline * out->w * 3;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    if (je.truncated) s = rk_fail(err, RK_EFORMAT, "truncated JPEG: the data ends before the image does");
    else jpeg_finish_decompress(&ci);
done:
    jpeg_destroy_decompress(&ci);
    if (s) rk_image_free(out);
    return s;
}

/* ---------------------------------------------------------------- PNG */

typedef struct {
    const uint8_t *p;
    size_t len, off;
    rk_err *err;
    char msg[200];
} pngsrc_t;

static void png_fail(png_structp png, png_const_charp msg) {
    pngsrc_t *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg);
    png_longjmp(png, 1);
}
static void png_warn(png_structp png, png_const_charp msg) { (void)png, (void)msg; }
static void png_read_mem(png_structp png, png_bytep dst, size_t n) {
    pngsrc_t *src = png_get_io_ptr(png);
    if (n > src->len - src->off) png_error(png, "the data ends before the image does (truncated)");
    memcpy(dst, src->p + src->off, n);
    src->off += n;
}

/* The part of decode_png between setjmp and the end: rows/out owned by caller. */
static rk_status png_body(png_structp png, png_infop info, const rk_image_limits *lim, rk_image *out, png_bytep **rows,
                          rk_err *err) {
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    rk_status s = check_dims(w, h, lim, "PNG", err);
    if (s) return s;
    int ct = png_get_color_type(png, info);
    png_set_strip_16(png);
    png_set_packing(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) {
        png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        return rk_fail(err, RK_EINTERNAL, "PNG: %zu bytes per row after conversion, expected %zu",
                       (size_t)png_get_rowbytes(png, info), (size_t)w * 3);
    out->rgb = rk_malloc((size_t)w * h * 3);
    *rows = rk_malloc((size_t)h * sizeof **rows);
    if (!out->rgb || !*rows) return rk_fail(err, RK_ENOMEM, "PNG: out of memory for %ux%u pixels", w, h);
    out->w = (int)w, out->h = (int)h;
    for (png_uint_32 y = 0; y < h; y++) (*rows)[y] = out->rgb + (size_t)y * w * 3;
    png_read_image(png, *rows);
    png_read_end(png, NULL);
    return RK_OK;
}

static rk_status decode_png(const uint8_t *data, size_t len, const rk_image_limits *lim, rk_image *out, rk_err *err) {
    pngsrc_t src = {data, len, 0, err, {0}};
    png_bytep *rows = NULL;
    png_infop info = NULL;
    rk_status s;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_warn);
    if (png) info = png_create_info_struct(png);
    if (!png || !info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return rk_fail(err, RK_ENOMEM, "PNG: out of memory");
    }
    png_bytep **volatile rows_p = &rows;
    if (setjmp(png_jmpbuf(png))) {
        s = rk_fail(err, RK_EFORMAT, "corrupt PNG: %s", src.msg);
        goto done;
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, 1000000, 1000000);
    png_set_chunk_malloc_max(png, 64 << 20);
    s = png_body(png, info, lim, out, rows_p, err);
done:
    png_destroy_read_struct(&png, &info, NULL);
    rk_free(*rows_p);
    if (s) rk_image_free(out);
    return s;
}

/* ---------------------------------------------------------------- decode */

rk_status rk_image_decode(const void *data, size_t len, const rk_image_limits *lim, rk_image *out, rk_err *err) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    rk_image_limits l = RK_IMAGE_LIMITS_DEFAULT;
    if (lim) l = *lim;
    memset(out, 0, sizeof *out);
    const uint8_t *p = data;
    if (len == 0) return rk_fail(err, RK_EFORMAT, "empty image data (0 bytes)");
    if (len > l.max_bytes)
        return rk_fail(err, RK_ETOOBIG, "image data of %zu bytes is over the limit of %zu bytes", len, l.max_bytes);
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return decode_jpeg(p, len, &l, out, err);
    if (len >= 8 && !memcmp(p, png_sig, 8)) return decode_png(p, len, &l, out, err);
    return rk_fail(err, RK_EFORMAT, "not a JPEG or PNG image (first bytes %02x %02x %02x %02x)", p[0],
                   len > 1 ? p[1] : 0, len > 2 ? p[2] : 0, len > 3 ? p[3] : 0);
}

rk_status rk_image_load(const char *path, const rk_image_limits *lim, rk_image *out, rk_err *err) {
    char *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    rk_status s = rk_read_file(path, &buf, &len, err);
    if (s) return s;
    s = rk_image_decode(buf, len, lim, out, err);
    rk_free(buf);
    if (s) rk_err_prefix(err, "%s", path);
    return s;
}

/* ---------------------------------------------------------------- resize (Pillow's algorithm) */

#define PREC 22 /* Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2 */

static double bicubic(double x) { /* Pillow's bicubic_filter, a = -0.5 */
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Taps of output index o of a resize in_size -> out_size: *first source
 * index, *n taps (<= ksize), fixed-point weights k[ksize]. Pillow's
 * precompute_coeffs + normalize_coeffs_8bpc for one output. */
static void taps(int in_size, int out_size, int o, int ksize, int *first, int *n, int32_t *k) {
    const double scale = (double)in_size / out_size, fs = scale < 1.0 ? 1.0 : scale, support = 2.0 * fs;
    const double center = (o + 0.5) * scale, ss = 1.0 / fs;
    int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; x++) ww += bicubic((x + xmin - center + 0.5) * ss);
    for (int x = 0; x < ksize; x++) {
        double v = x < xmax ? bicubic((x + xmin - center + 0.5) * ss) : 0.0;
        if (ww != 0.0) v /= ww;
        k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PREC)) : (int32_t)(0.5 + v * (1 << PREC));
    }
    *first = xmin, *n = xmax;
}

static uint8_t clip8(int64_t v) {
    v >>= PREC;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int ksize_of(int in_size, int out_size) {
    double scale = (double)in_size / out_size, fs = scale < 1.0 ? 1.0 : scale;
    return (int)ceil(2.0 * fs) * 2 + 1;
}

/* Python's int(round(d / 2.0)) for d >= 0: half to even. */
static int half_even(int d) { return d % 2 == 0 ? d / 2 : (d / 2) % 2 == 0 ? d / 2 : d / 2 + 1; }

rk_status rk_image_preprocess(const rk_image *im, int resize, int crop, float *out, rk_err *err) {
    if (resize < crop || crop < 1) return rk_fail(err, RK_EINVAL, "preprocess: resize %d < crop %d", resize, crop);
    const int w = im->w, h = im->h;
    const int sh = w <= h ? w : h, lg = w <= h ? h : w;
    if ((double)resize * lg / sh > (double)(1 << 24))
        return rk_fail(err, RK_EFORMAT, "image of %dx%d: aspect ratio too extreme to resize", w, h);
    const int nlong = (int)((double)resize * lg / sh); /* Python's int(size * long / short) */
    const int ow = w <= h ? resize : nlong, oh = w <= h ? nlong : resize;
    const int left = half_even(ow - crop), top = half_even(oh - crop);
    const int kx = ksize_of(w, ow), ky = ksize_of(h, oh);
    /* source rows the crop's vertical taps read */
    int y_first = h, y_last = 0;
    int32_t *kk = rk_malloc((size_t)(crop * kx + crop * ky) * sizeof(int32_t));
    int *bx = rk_malloc((size_t)crop * 4 * sizeof(int));
    uint8_t *tmp = NULL;
    rk_status s = RK_OK;
    if (!kk || !bx) {
        s = rk_fail(err, RK_ENOMEM, "preprocess: out of memory");
        goto done;
    }
    int32_t *kh = kk, *kv = kk + (size_t)crop * kx;
    int *by = bx + 2 * crop;
    for (int i = 0; i < crop; i++) {
        taps(w, ow, left + i, kx, &bx[2 * i], &bx[2 * i + 1], kh + (size_t)i * kx);
        taps(h, oh, top + i, ky, &by[2 * i], &by[2 * i + 1], kv + (size_t)i * ky);
        if (by[2 * i] < y_first) y_first = by[2 * i];
        if (by[2 * i] + by[2 * i + 1] > y_last) y_last = by[2 * i] + by[2 * i + 1];
    }
    const int nrows = y_last - y_first;
    tmp = rk_malloc((size_t)(nrows > 0 ? nrows : 1) * crop * 3);
    if (!tmp) {
        s = rk_fail(err, RK_ENOMEM, "preprocess: out of memory for %d x %d rows", nrows, crop);
        goto done;
    }
    /* horizontal pass: tmp[r, x, c] for source rows y_first + r, crop columns x */
    for (int r = 0; r < nrows; r++) {
        const uint8_t *src = im->rgb + (size_t)(y_first + r) * w * 3;
        for (int x = 0; x < crop; x++) {
            const int32_t *k = kh + (size_t)x * kx;
            const uint8_t *sp = src + (size_t)bx[2 * x] * 3;
            int64_t a0 = 1 << (PREC - 1), a1 = a0, a2 = a0;
            for (int t = 0; t < bx[2 * x + 1]; t++) {
                a0 += (int64_t)sp[3 * t] * k[t], a1 += (int64_t)sp[3 * t + 1] * k[t], a2 += (int64_t)sp[3 * t + 2] * k[t];
            }
            uint8_t *d = tmp + ((size_t)r * crop + x) * 3;
            d[0] = clip8(a0), d[1] = clip8(a1), d[2] = clip8(a2);
        }
    }
    /* vertical pass, then ToTensor + Normalize into out[3, crop, crop] */
    const size_t plane = (size_t)crop * crop;
    for (int y = 0; y < crop; y++) {
        const int32_t *k = kv + (size_t)y * ky;
        const int y0 = by[2 * y] - y_first;
        for (int x = 0; x < crop; x++) {
            int64_t a[3] = {1 << (PREC - 1), 1 << (PREC - 1), 1 << (PREC - 1)};
            for (int t = 0; t < by[2 * y + 1]; t++) {
                const uint8_t *sp = tmp + ((size_t)(y0 + t) * crop + x) * 3;
                for (int c = 0; c < 3; c++) a[c] += (int64_t)sp[c] * k[t];
            }
            for (int c = 0; c < 3; c++)
                out[c * plane + (size_t)y * crop + x] = ((float)clip8(a[c]) / 255.0f - k_mean[c]) / k_std[c];
        }
    }
done:
    rk_free(kk);
    rk_free(bx);
    rk_free(tmp);
    return s;
}

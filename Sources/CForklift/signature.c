/*
 * Function signatures for typed calls: parsing, libffi preparation, and the call itself.
 *
 * Grammar (spaces allowed anywhere between tokens):
 *     signature := type "(" [ type { "," type } ] ")"
 *     type      := name | "{" type { "," type } "}"          (a struct passed by value)
 *     name      := void | i8 | u8 | i16 | u16 | i32 | u32 | i64 | u64 | char | int | unsigned
 *                | long | ulong | size_t | float | double | ptr
 * `void` is a return type only ("(void)" means no arguments). Variadic functions ("...") are
 * rejected: libffi needs the types of the variadic arguments at each call.
 *
 * A call's arguments are read from a "tuple": a block laid out like a C struct whose members
 * are the arguments in order, each at its natural alignment.
 */
#include "forklift_shim.h"

#include <ffi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ARGS = 64, MAX_FIELDS = 64, MAX_DEPTH = 8 };

struct fls_sig {
    ffi_cif cif;
    ffi_type *result;
    ffi_type *args[MAX_ARGS];
    size_t offsets[MAX_ARGS];
    size_t nargs;
    size_t tuple_size;
    size_t result_size;
    /* Struct types built while parsing, freed with the signature. */
    ffi_type **owned;
    size_t owned_count;
};

typedef struct {
    const char *text;
    const char *at;
    fls_sig *sig;
    char *error;
    size_t error_len;
    int failed;
} parser;

static void fail(parser *p, const char *format, ...) {
    if (p->failed) return;
    p->failed = 1;
    char detail[160];
    va_list ap;
    va_start(ap, format);
    vsnprintf(detail, sizeof detail, format, ap);
    va_end(ap);
    /* A long signature is shown around the offset, so the reason always fits the message. */
    int offset = (int)(p->at - p->text), length = (int)strlen(p->text);
    enum { SHOWN_BEFORE = 40, SHOWN_AFTER = 40 };
    if (length <= SHOWN_BEFORE + SHOWN_AFTER) {
        snprintf(p->error, p->error_len, "signature \"%s\", at offset %d: %s", p->text, offset, detail);
        return;
    }
    int from = offset > SHOWN_BEFORE ? offset - SHOWN_BEFORE : 0;
    int to = offset + SHOWN_AFTER < length ? offset + SHOWN_AFTER : length;
    snprintf(p->error, p->error_len, "signature \"%s%.*s%s\" (%d characters), at offset %d: %s", from > 0 ? "..." : "",
             to - from, p->text + from, to < length ? "..." : "", length, offset, detail);
}

static void skip_spaces(parser *p) {
    while (*p->at == ' ' || *p->at == '\t') p->at++;
}

static int accept(parser *p, char c) {
    skip_spaces(p);
    if (*p->at != c) return 0;
    p->at++;
    return 1;
}

static const struct {
    const char *name;
    ffi_type *type;
} names[] = {
    {"void", &ffi_type_void},     {"i8", &ffi_type_sint8},      {"u8", &ffi_type_uint8},
    {"i16", &ffi_type_sint16},    {"u16", &ffi_type_uint16},    {"i32", &ffi_type_sint32},
    {"u32", &ffi_type_uint32},    {"i64", &ffi_type_sint64},    {"u64", &ffi_type_uint64},
    {"char", &ffi_type_schar},    {"int", &ffi_type_sint},      {"unsigned", &ffi_type_uint},
    {"long", &ffi_type_slong},    {"ulong", &ffi_type_ulong},   {"float", &ffi_type_float},
    {"double", &ffi_type_double}, {"ptr", &ffi_type_pointer},
};

static ffi_type *own(parser *p, ffi_type *t) {
    ffi_type **grown = realloc(p->sig->owned, (p->sig->owned_count + 1) * sizeof *grown);
    if (!grown) {
        fail(p, "out of memory");
        return NULL;
    }
    p->sig->owned = grown;
    p->sig->owned[p->sig->owned_count++] = t;
    return t;
}

/* `depth`: the nesting level of the struct parsed there (1 for an argument or result itself). */
static ffi_type *parse_type(parser *p, int depth);

static ffi_type *parse_struct(parser *p, int depth) {
    if (depth > MAX_DEPTH) {
        fail(p, "structs nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    ffi_type *fields[MAX_FIELDS];
    size_t count = 0;
    do {
        if (count == MAX_FIELDS) {
            fail(p, "more than %d fields in a struct", MAX_FIELDS);
            return NULL;
        }
        ffi_type *field = parse_type(p, depth + 1);
        if (!field) return NULL;
        if (field == &ffi_type_void) {
            fail(p, "a struct field cannot be void");
            return NULL;
        }
        fields[count++] = field;
    } while (accept(p, ','));
    if (!accept(p, '}')) {
        fail(p, "expected ',' or '}'");
        return NULL;
    }
    ffi_type *t = calloc(1, sizeof *t);
    ffi_type **elements = calloc(count + 1, sizeof *elements);
    if (!t || !elements) {
        free(t);
        free(elements);
        fail(p, "out of memory");
        return NULL;
    }
    memcpy(elements, fields, count * sizeof *elements);
    t->type = FFI_TYPE_STRUCT;
    t->elements = elements;
    return own(p, t);
}

static ffi_type *parse_type(parser *p, int depth) {
    skip_spaces(p);
    if (accept(p, '{')) return parse_struct(p, depth);
    const char *start = p->at;
    while ((*p->at >= 'a' && *p->at <= 'z') || (*p->at >= '0' && *p->at <= '9') || *p->at == '_') p->at++;
    size_t len = (size_t)(p->at - start);
    if (len == 0) {
        if (strncmp(p->at, "...", 3) == 0) fail(p, "variadic functions are not supported");
        else fail(p, "expected a type");
        return NULL;
    }
    if (len == 6 && strncmp(start, "size_t", 6) == 0) return sizeof(size_t) == 8 ? &ffi_type_uint64 : &ffi_type_uint32;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == len && strncmp(start, names[i].name, len) == 0) return names[i].type;
    }
    p->at = start;
    fail(p, "unknown type \"%.*s\"", (int)len, start);
    return NULL;
}

void fls_sig_free(fls_sig *sig) {
    if (!sig) return;
    for (size_t i = 0; i < sig->owned_count; i++) {
        free(sig->owned[i]->elements);
        free(sig->owned[i]);
    }
    free(sig->owned);
    free(sig);
}

fls_sig *fls_sig_parse(const char *text, char *error, size_t error_len) {
    fls_sig *sig = calloc(1, sizeof *sig);
    if (!sig) {
        snprintf(error, error_len, "out of memory");
        return NULL;
    }
    parser p = {text, text, sig, error, error_len, 0};
    sig->result = parse_type(&p, 1);
    if (sig->result && !accept(&p, '(')) fail(&p, "expected '(' after the return type");
    if (!p.failed && !accept(&p, ')')) {
        do {
            if (sig->nargs == MAX_ARGS) {
                fail(&p, "more than %d arguments", MAX_ARGS);
                break;
            }
            ffi_type *arg = parse_type(&p, 1);
            if (!arg) break;
            if (arg == &ffi_type_void) {
                if (sig->nargs == 0 && accept(&p, ')')) goto arguments_done; /* "(void)" */
                fail(&p, "void is not an argument type");
                break;
            }
            sig->args[sig->nargs++] = arg;
        } while (accept(&p, ','));
        if (!p.failed && !accept(&p, ')')) {
            skip_spaces(&p);
            if (strncmp(p.at, "...", 3) == 0) fail(&p, "variadic functions are not supported");
            else fail(&p, "expected ',' or ')'");
        }
    }
arguments_done:
    skip_spaces(&p);
    if (!p.failed && *p.at != 0) fail(&p, "unexpected text after the signature");
    if (!p.failed && ffi_prep_cif(&sig->cif, FFI_DEFAULT_ABI, (unsigned)sig->nargs, sig->result, sig->args) != FFI_OK) {
        fail(&p, "libffi cannot prepare this signature");
    }
    if (p.failed) {
        fls_sig_free(sig);
        return NULL;
    }
    /* ffi_prep_cif has filled in the sizes and alignments of struct types. */
    size_t offset = 0, align = 1;
    for (size_t i = 0; i < sig->nargs; i++) {
        size_t a = sig->args[i]->alignment;
        offset = (offset + a - 1) / a * a;
        sig->offsets[i] = offset;
        offset += sig->args[i]->size;
        if (a > align) align = a;
    }
    sig->tuple_size = (offset + align - 1) / align * align;
    sig->result_size = sig->result == &ffi_type_void ? 0 : sig->result->size;
    return sig;
}

size_t fls_sig_nargs(const fls_sig *sig) { return sig->nargs; }
size_t fls_sig_tuple_size(const fls_sig *sig) { return sig->tuple_size; }
size_t fls_sig_result_size(const fls_sig *sig) { return sig->result_size; }

size_t fls_sig_arg_size(const fls_sig *sig, size_t index) { return sig->args[index]->size; }

void fls_sig_call(const fls_sig *sig, void (*fn)(void), const void *tuple, void *result) {
    void *values[MAX_ARGS];
    for (size_t i = 0; i < sig->nargs; i++) values[i] = (char *)(uintptr_t)tuple + sig->offsets[i];
    /* libffi widens small integer results to a full ffi_arg and may write a whole register
     * for small structs: call into a buffer large enough, then narrow. */
    union {
        ffi_arg integer;
        ffi_sarg signed_integer;
        unsigned char bytes[256];
    } out;
    void *target = sig->result_size > sizeof out ? result : (void *)&out;
    ffi_call((ffi_cif *)&sig->cif, fn, target, values);
    if (!result || sig->result_size == 0 || target == result) return;
    switch (sig->result->type) {
    case FFI_TYPE_SINT8: *(int8_t *)result = (int8_t)out.signed_integer; break;
    case FFI_TYPE_UINT8: *(uint8_t *)result = (uint8_t)out.integer; break;
    case FFI_TYPE_SINT16: *(int16_t *)result = (int16_t)out.signed_integer; break;
    case FFI_TYPE_UINT16: *(uint16_t *)result = (uint16_t)out.integer; break;
    case FFI_TYPE_SINT32: *(int32_t *)result = (int32_t)out.signed_integer; break;
    case FFI_TYPE_UINT32: *(uint32_t *)result = (uint32_t)out.integer; break;
    default: memcpy(result, out.bytes, sig->result_size); break;
    }
}

int fls_sig_call_blobs(const fls_sig *sig, void (*fn)(void), const fl_blob *args, size_t nargs, void *result,
                       char *error, size_t error_len) {
    if (nargs != sig->nargs) {
        snprintf(error, error_len, "%zu arguments given; the signature takes %zu", nargs, sig->nargs);
        return -1;
    }
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].len != sig->args[i]->size) {
            snprintf(error, error_len, "argument %zu holds %zu bytes; the signature's argument %zu takes %zu", i,
                     args[i].len, i, (size_t)sig->args[i]->size);
            return -1;
        }
    }
    /* The values are packed into a tuple: blobs need not be aligned for their types. */
    _Alignas(16) unsigned char stack[512];
    unsigned char *tuple = stack;
    if (sig->tuple_size > sizeof stack) {
        tuple = aligned_alloc(16, (sig->tuple_size + 15) / 16 * 16);
        if (!tuple) {
            snprintf(error, error_len, "no memory for a %zu-byte argument tuple", sig->tuple_size);
            return -1;
        }
    }
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].len > 0) memcpy(tuple + sig->offsets[i], args[i].data, args[i].len);
    }
    fls_sig_call(sig, fn, tuple, result);
    if (tuple != stack) free(tuple);
    return 0;
}

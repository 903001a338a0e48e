/*
 * no-empty: an etch validator written in C, against the canonical ABI of the `validator`
 * world of guest-sdk/wit-0.1.0/etch.wit (etch:plugin@0.1.0, which nodes still serve beside
 * 0.2.0) by hand: no wit-bindgen, no libc, no WASI. It refuses a put under the binding's prefix whose value is empty (code `empty`).
 *
 * Built by scripts/build-plugins with Debian's clang and lld:
 *   clang --target=wasm32-unknown-unknown -O2 -nostdlib -Wl,--no-entry ... no_empty.c
 *   etch-plugin encode no_empty.wasm c-no-empty.wasm --world validator@0.1.0
 * (`--world` embeds the world that wit-bindgen would have embedded; docs/plugins.md,
 * "Other languages").
 */

#include <stdint.h>

typedef uint32_t u32;
typedef uint8_t u8;

/* list<u8> and string: a pointer and a length (8 bytes, 4-aligned). */
typedef struct {
    const u8 *ptr;
    u32 len;
} list;

/* record key-value: key, value, then four s64 (48 bytes, 8-aligned). */
typedef struct {
    list key;
    list value;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} key_value;

/* record op: kind (enum, one byte), key, value, prev (option<key-value>: a discriminant
 * byte, then the payload at 8): 80 bytes, 8-aligned. */
typedef struct {
    u8 kind; /* 0 put, 1 delete */
    list key;
    list value;
    struct {
        u8 is_some;
        key_value value;
    } prev;
} op;

_Static_assert(sizeof(key_value) == 48, "key-value is 48 bytes");
_Static_assert(sizeof(op) == 80, "op is 80 bytes");

/* variant verdict: a discriminant byte (0 allow, 1 deny), then denial { code, reason } at
 * 4: what `validate` returns, by pointer. */
typedef struct {
    u8 deny;
    list code;
    list reason;
} verdict;

/* The canonical ABI's allocator, over a bump pointer that never frees: each call runs in
 * a fresh instance, so nothing outlives it. */
extern u8 __heap_base;
static u32 heap_top;

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, u32 old_len,
                                                                 u32 align, u32 new_len) {
    if (heap_top == 0) {
        heap_top = (u32)&__heap_base;
    }
    u32 at = (heap_top + align - 1) & ~(align - 1);
    u32 end = at + new_len;
    if (at < heap_top || end < at) {
        __builtin_trap(); /* past 4 GiB: no such memory */
    }
    u32 pages = __builtin_wasm_memory_size(0);
    if (end > pages * 65536) {
        if (__builtin_wasm_memory_grow(0, (end - pages * 65536 + 65535) / 65536) == (u32)-1) {
            __builtin_trap();
        }
    }
    u8 *to = (u8 *)at;
    const u8 *from = old;
    for (u32 i = 0; i < old_len && i < new_len; i++) {
        to[i] = from[i];
    }
    heap_top = end;
    return to;
}

static int starts_with(list s, list prefix) {
    if (s.len < prefix.len) {
        return 0;
    }
    for (u32 i = 0; i < prefix.len; i++) {
        if (s.ptr[i] != prefix.ptr[i]) {
            return 0;
        }
    }
    return 1;
}

static verdict answer;
static u8 reason[8192 + 64];

static list text(const char *s) {
    u32 n = 0;
    while (s[n]) {
        n++;
    }
    return (list){(const u8 *)s, n};
}

/* validate(request) -> verdict, flattened: principal, prefix, revision, ops. */
__attribute__((export_name("validate"))) verdict *validate(const u8 *principal_ptr,
                                                           u32 principal_len,
                                                           const u8 *prefix_ptr,
                                                           u32 prefix_len, int64_t revision,
                                                           const op *ops, u32 ops_len) {
    (void)principal_ptr;
    (void)principal_len;
    (void)revision;
    list prefix = {prefix_ptr, prefix_len};
    for (u32 i = 0; i < ops_len; i++) {
        const op *o = &ops[i];
        if (o->kind == 0 && o->value.len == 0 && starts_with(o->key, prefix)) {
            /* "KEY: empty values are refused", the key cut at 8 KiB. */
            u32 n = 0;
            for (u32 k = 0; k < o->key.len && n < 8192; k++) {
                reason[n++] = o->key.ptr[k];
            }
            list tail = text(": empty values are refused");
            for (u32 k = 0; k < tail.len; k++) {
                reason[n++] = tail.ptr[k];
            }
            answer = (verdict){1, text("empty"), {reason, n}};
            return &answer;
        }
    }
    answer = (verdict){0, {0, 0}, {0, 0}};
    return &answer;
}

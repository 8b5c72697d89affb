/*
 * tb-gai-trace.so: an LD_PRELOAD shim around getaddrinfo(3).
 *
 * Every call is passed to the real getaddrinfo (dlsym RTLD_NEXT) and logged as
 * one JSON line, written with a single write() to the O_APPEND file named by
 * $TB_GAI_LOG:
 *
 *   {"t": 1700000000.123456, "dur_ms": 1.234, "node": "mx.example", "service": "25",
 *    "family": 0, "flags": 32, "rc": 0, "error": null, "override": false,
 *    "addresses": ["2001:db8::25", "192.0.2.25"]}
 *
 * addresses are in the order returned, duplicates (one per socket type) removed.
 *
 * If $TB_GAI_OVERRIDE names a file of lines "NAME ADDR [ADDR...]" ("NAME" alone:
 * no addresses) and the node matches NAME (case-insensitive, trailing dots
 * ignored), the call returns exactly those addresses in that order: each one is
 * resolved by the real getaddrinfo with AI_NUMERICHOST and the lists are chained,
 * so the real freeaddrinfo frees them (glibc frees node by node). A line without
 * addresses answers EAI_NONAME; addresses none of which fit the requested family
 * answer EAI_NODATA. Such calls are logged with "override": true.
 *
 * No state is shared between calls but the resolved symbol (pthread_once): curl
 * resolves in a thread of its own.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static gai_fn real_gai;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void resolve_real(void) { real_gai = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo"); }

#define MAX_ADDRS 64
#define LINE_MAX_LEN 8192

struct buf {
    char data[LINE_MAX_LEN];
    size_t len;
    int overflow;
};

static void put(struct buf *b, const char *fmt, ...) {
    va_list ap;
    size_t room = sizeof b->data - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        b->overflow = 1;
        return;
    }
    b->len += (size_t)n;
}

static void put_json_string(struct buf *b, const char *s) {
    if (!s) {
        put(b, "null");
        return;
    }
    put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            put(b, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            put(b, "\\u%04x", *p);
        else
            put(b, "%c", *p);
    }
    put(b, "\"");
}

static const char *eai_name(int rc) {
    switch (rc) {
    case 0: return NULL;
    case EAI_BADFLAGS: return "EAI_BADFLAGS";
    case EAI_NONAME: return "EAI_NONAME";
    case EAI_AGAIN: return "EAI_AGAIN";
    case EAI_FAIL: return "EAI_FAIL";
    case EAI_FAMILY: return "EAI_FAMILY";
    case EAI_SOCKTYPE: return "EAI_SOCKTYPE";
    case EAI_SERVICE: return "EAI_SERVICE";
    case EAI_MEMORY: return "EAI_MEMORY";
    case EAI_SYSTEM: return "EAI_SYSTEM";
    case EAI_OVERFLOW: return "EAI_OVERFLOW";
#ifdef EAI_NODATA
    case EAI_NODATA: return "EAI_NODATA";
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: return "EAI_ADDRFAMILY";
#endif
#ifdef EAI_INPROGRESS
    case EAI_INPROGRESS: return "EAI_INPROGRESS";
    case EAI_CANCELED: return "EAI_CANCELED";
    case EAI_NOTCANCELED: return "EAI_NOTCANCELED";
    case EAI_ALLDONE: return "EAI_ALLDONE";
    case EAI_INTR: return "EAI_INTR";
#endif
#ifdef EAI_IDN_ENCODE
    case EAI_IDN_ENCODE: return "EAI_IDN_ENCODE";
#endif
    default: return "EAI_UNKNOWN";
    }
}

/* The address of one result as text, or 0 if it is not IPv4/IPv6. */
static int addr_text(const struct addrinfo *ai, char *out, size_t size) {
    if (ai->ai_family == AF_INET && ai->ai_addr)
        return inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, out, size) != NULL;
    if (ai->ai_family == AF_INET6 && ai->ai_addr)
        return inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, out, size) != NULL;
    return 0;
}

static void log_call(double t, double dur_ms, const char *node, const char *service,
                     const struct addrinfo *hints, int rc, const struct addrinfo *res, int override) {
    const char *path = getenv("TB_GAI_LOG");
    if (!path || !*path)
        return;
    struct buf b = {.len = 0, .overflow = 0};
    put(&b, "{\"t\": %.6f, \"dur_ms\": %.3f, \"node\": ", t, dur_ms);
    put_json_string(&b, node);
    put(&b, ", \"service\": ");
    put_json_string(&b, service);
    put(&b, ", \"family\": %d, \"flags\": %d, \"rc\": %d, \"error\": ",
        hints ? hints->ai_family : 0, hints ? hints->ai_flags : 0, rc);
    const char *err = eai_name(rc);
    if (err)
        put(&b, "\"%s\"", err);
    else
        put(&b, "null");
    put(&b, ", \"override\": %s, \"addresses\": [", override ? "true" : "false");
    char seen[MAX_ADDRS][INET6_ADDRSTRLEN];
    int nseen = 0;
    for (const struct addrinfo *ai = rc == 0 ? res : NULL; ai; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN];
        if (!addr_text(ai, text, sizeof text))
            continue;
        int dup = 0;
        for (int i = 0; i < nseen && !dup; i++)
            dup = strcmp(seen[i], text) == 0;
        if (dup)
            continue;
        if (nseen < MAX_ADDRS)
            strcpy(seen[nseen], text);
        put(&b, "%s\"%s\"", nseen ? ", " : "", text);
        nseen++;
    }
    put(&b, "]}\n");
    if (b.overflow) {
        /* Still one valid JSON line: the call, without its addresses. */
        b.len = 0;
        b.overflow = 0;
        put(&b, "{\"t\": %.6f, \"dur_ms\": %.3f, \"node\": null, \"service\": null, \"family\": %d, "
                "\"flags\": %d, \"rc\": %d, \"error\": \"TB_LOG_OVERFLOW\", \"override\": %s, "
                "\"addresses\": []}\n",
            t, dur_ms, hints ? hints->ai_family : 0, hints ? hints->ai_flags : 0, rc,
            override ? "true" : "false");
    }
    int saved = errno;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t unused = write(fd, b.data, b.len);
        (void)unused;
        close(fd);
    }
    errno = saved;
}

/* Does NAME (a word of the override file) name NODE?  Case-insensitive, trailing dots ignored. */
static int same_name(const char *name, size_t nlen, const char *node) {
    size_t len = strlen(node);
    while (len && node[len - 1] == '.')
        len--;
    while (nlen && name[nlen - 1] == '.')
        nlen--;
    return len == nlen && strncasecmp(name, node, len) == 0;
}

/*
 * 1 and *rc set: the override file has a line for NODE (the answer is built in *res);
 * 0: no override applies (no file, no line).
 */
static int override_lookup(const char *node, const char *service, const struct addrinfo *hints,
                           struct addrinfo **res, int *rc) {
    const char *path = getenv("TB_GAI_OVERRIDE");
    if (!path || !*path || !node)
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *save = NULL;
        char *name = strtok_r(line, " \t\r\n", &save);
        if (!name || name[0] == '#' || !same_name(name, strlen(name), node))
            continue;
        found = 1;
        struct addrinfo one = {0};
        if (hints) {
            one.ai_family = hints->ai_family;
            one.ai_socktype = hints->ai_socktype;
            one.ai_protocol = hints->ai_protocol;
        }
        one.ai_flags = AI_NUMERICHOST;
        struct addrinfo *head = NULL, *tail = NULL;
        int addrs = 0;
        for (char *addr = strtok_r(NULL, " \t\r\n", &save); addr; addr = strtok_r(NULL, " \t\r\n", &save)) {
            struct addrinfo *part = NULL;
            addrs++;
            if (real_gai(addr, service, &one, &part) != 0 || !part)
                continue; /* not of the requested family (or not an address at all) */
            if (tail)
                tail->ai_next = part;
            else
                head = part;
            for (tail = part; tail->ai_next; tail = tail->ai_next)
                ;
        }
        *res = head;
        *rc = head ? 0 : addrs ? EAI_NODATA : EAI_NONAME;
    }
    fclose(f);
    return found;
}

static double since(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    pthread_once(&once, resolve_real);
    if (!real_gai)
        return EAI_SYSTEM;
    struct timespec wall, start, end;
    clock_gettime(CLOCK_REALTIME, &wall);
    clock_gettime(CLOCK_MONOTONIC, &start);
    int rc = 0;
    int override = override_lookup(node, service, hints, res, &rc);
    if (!override)
        rc = real_gai(node, service, hints, res);
    clock_gettime(CLOCK_MONOTONIC, &end);
    int saved = errno;
    log_call((double)wall.tv_sec + (double)wall.tv_nsec / 1e9, since(&start, &end), node, service, hints, rc,
             rc == 0 ? *res : NULL, override);
    errno = saved;
    return rc;
}

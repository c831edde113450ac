/*
 * Internal: one message with file descriptors attached (SCM_RIGHTS) over a Unix socket — how
 * large pipe messages, fork-server requests and worker results carry their memfds.
 */
#ifndef FORKLIFT_FDPASS_H
#define FORKLIFT_FDPASS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/** Most descriptors one message carries. */
#define FLS_MAX_PASSED_FDS 3

/** Sends `iov` as one message with `nfds` descriptors (0 to FLS_MAX_PASSED_FDS) attached;
 *  `flags` as for sendmsg (MSG_NOSIGNAL is always added). Returns the bytes sent, or -1 with
 *  errno (EINTR is retried). */
ssize_t fls_send_fds(int socket, const struct iovec *iov, int iovcnt, const int *fds, int nfds, int flags);

/** Receives one message into `iov`, its descriptors into `fds` (up to `max_fds`; the others
 *  set to -1; close-on-exec); `flags` as for recvmsg. Returns the bytes received, 0 at the end
 *  of the stream, or -1 with errno (EINTR is retried). */
ssize_t fls_recv_fds(int socket, const struct iovec *iov, int iovcnt, int *fds, int max_fds, int flags);

#endif /* FORKLIFT_FDPASS_H */

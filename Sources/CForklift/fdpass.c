/*
 * Messages with file descriptors attached (see forklift_fdpass.h).
 */
#define _GNU_SOURCE
#include "forklift_fdpass.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef union {
    char buffer[CMSG_SPACE(FLS_MAX_PASSED_FDS * sizeof(int))];
    struct cmsghdr align;
} fd_control;

ssize_t fls_send_fds(int socket, const struct iovec *iov, int iovcnt, const int *fds, int nfds, int flags) {
    fd_control control;
    memset(&control, 0, sizeof control);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)iovcnt;
    if (nfds > 0) {
        if (nfds > FLS_MAX_PASSED_FDS) {
            errno = EINVAL;
            return -1;
        }
        msg.msg_control = control.buffer;
        msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t n;
    do {
        n = sendmsg(socket, &msg, flags | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t fls_recv_fds(int socket, const struct iovec *iov, int iovcnt, int *fds, int max_fds, int flags) {
    for (int i = 0; i < max_fds; i++) fds[i] = -1;
    fd_control control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = (size_t)iovcnt;
    msg.msg_control = control.buffer;
    msg.msg_controllen = sizeof control.buffer;
    ssize_t n;
    do {
        n = recvmsg(socket, &msg, flags | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int received[FLS_MAX_PASSED_FDS];
        memcpy(received, CMSG_DATA(cmsg), (size_t)(count < FLS_MAX_PASSED_FDS ? count : FLS_MAX_PASSED_FDS) * sizeof(int));
        for (int i = 0; i < count && i < FLS_MAX_PASSED_FDS; i++) {
            if (i < max_fds) fds[i] = received[i];
            else close(received[i]);
        }
    }
    return n;
}

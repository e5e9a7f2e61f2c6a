// Types of fds.cjs (plain CommonJS, shared with the child scripts run by plain node).
/** This process's descriptors on anonymous inodes of `kind` (io_uring, eventfd). */
export declare function anonFds(kind: string): number

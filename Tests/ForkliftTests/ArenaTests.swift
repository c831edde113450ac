#if canImport(Glibc)
import Glibc
#endif
import CForklift
import XCTest
@testable import Forklift

/// The shared-memory arena of large objects (`forklift_arena.h`): reuse of freed pages, merging,
/// the retention limit, trimming, and allocations from several threads. The arena is process-
/// wide, so each test starts from a trim (no kept ranges) and checks its own ranges only.
final class ArenaTests: XCTestCase {
    private static let mib = 1 << 20
    /// lseek's SEEK_DATA (Linux; Glibc exports it only with _GNU_SOURCE).
    private static let seekData: Int32 = 3

    /// Whether the pages of `length` bytes at `data` (in `segment`) are allocated in the
    /// segment's memfd: the first data at or after the range's offset lies inside it.
    private func hasPages(_ data: UnsafeMutableRawPointer, length: Int, segment: UInt32) -> Bool {
        var place = fls_arena_place()
        XCTAssertEqual(fls_arena_place_of(data, segment, &place), 0)
        let found = lseek(place.fd, off_t(place.offset), Self.seekData)
        return found >= 0 && UInt64(found) < place.offset + UInt64(length)
    }

    private func allocate(_ length: Int) -> (UnsafeMutableRawPointer, UInt32) {
        var segment: UInt32 = 0
        let data = fls_arena_alloc(length, &segment)
        XCTAssertNotNil(data)
        return (data!, segment)
    }

    func testAFreedRangeServesTheNextAllocationWithItsPages() {
        fls_arena_trim()
        let length = 5 * Self.mib + 12 * 1024 + 7
        let (first, segment) = allocate(length)
        memset(first, 0x11, length)
        XCTAssertTrue(hasPages(first, length: length, segment: segment))
        let retainedBefore = fls_arena_retained()
        fls_arena_free(first, length, segment)
        let rounded = (length + Int(FLS_ARENA_PAGE) - 1) / Int(FLS_ARENA_PAGE) * Int(FLS_ARENA_PAGE)
        XCTAssertEqual(fls_arena_retained(), retainedBefore + rounded)
        XCTAssertTrue(hasPages(first, length: length, segment: segment), "a freed range keeps its pages")

        let (second, again) = allocate(length)
        XCTAssertEqual(second, first)
        XCTAssertEqual(again, segment)
        XCTAssertEqual(fls_arena_retained(), retainedBefore)
        XCTAssertEqual(second.load(as: UInt8.self), 0x11, "kept pages are handed out as they were left")
        fls_arena_free(second, length, again)
        fls_arena_trim()
        XCTAssertEqual(fls_arena_retained(), 0)
        XCTAssertFalse(hasPages(first, length: length, segment: segment), "trim releases kept pages")
    }

    func testNeighbouringFreeRangesMerge() {
        fls_arena_trim()
        let length = 40 * Self.mib
        let ranges = (0..<3).map { _ in allocate(length) }
        XCTAssertEqual(ranges[1].0, ranges[0].0 + length)
        XCTAssertEqual(ranges[2].0, ranges[1].0 + length)
        for (data, _) in ranges { memset(data, 1, length) }
        for (data, segment) in [ranges[0], ranges[2], ranges[1]] { fls_arena_free(data, length, segment) }
        // The three kept ranges are one now: an allocation of all three fits where the first was.
        let (whole, segment) = allocate(3 * length)
        XCTAssertEqual(whole, ranges[0].0)
        XCTAssertTrue(hasPages(whole, length: 3 * length, segment: segment))
        fls_arena_free(whole, 3 * length, segment)
        fls_arena_trim()
    }

    func testFreedPagesPastTheRetentionLimitAreReleased() {
        fls_arena_trim()
        let limit = fls_arena_retain_limit()
        defer { fls_arena_set_retain_limit(limit) }
        fls_arena_set_retain_limit(Self.mib)
        XCTAssertEqual(fls_arena_retain_limit(), Self.mib)

        let (large, largeSegment) = allocate(2 * Self.mib)
        memset(large, 2, 2 * Self.mib)
        fls_arena_free(large, 2 * Self.mib, largeSegment)
        XCTAssertEqual(fls_arena_retained(), 0)
        XCTAssertFalse(hasPages(large, length: 2 * Self.mib, segment: largeSegment))

        let small = Self.mib / 2
        let (kept, keptSegment) = allocate(small)
        memset(kept, 3, small)
        fls_arena_free(kept, small, keptSegment)
        XCTAssertEqual(fls_arena_retained(), small)
        XCTAssertTrue(hasPages(kept, length: small, segment: keptSegment))
        fls_arena_trim()
    }

    /// While a runtime whose store has a capacity lives, the pages kept for reuse stay within
    /// that capacity; once its store has gone, the limit is what it was.
    func testAStoreCapacityBoundsTheKeptPagesWhileItsRuntimeLives() throws {
        fls_arena_trim()
        let base = fls_arena_retain_limit()
        var options = fl_runtime_options()
        XCTAssertEqual(fl_runtime_options_init(&options), FL_OK)
        options.process_workers = 1
        options.store_capacity = Self.mib
        var runtime: fl_runtime?
        XCTAssertEqual(fl_runtime_create(&options, &runtime), FL_OK)
        XCTAssertEqual(fls_arena_retain_limit(), min(base, Self.mib))
        let (large, segment) = allocate(2 * Self.mib)
        memset(large, 4, 2 * Self.mib)
        fls_arena_free(large, 2 * Self.mib, segment)
        XCTAssertEqual(fls_arena_retained(), 0, "2 MiB of freed pages do not fit a 1 MiB store")
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK)
        var waited = 0
        while fls_arena_retain_limit() != base && waited < 5000 {
            usleep(1000)
            waited += 1
        }
        XCTAssertEqual(fls_arena_retain_limit(), base)
    }

    func testAnAllocationLargerThanASegmentGetsOneOfItsOwn() {
        let length = Int(FLS_ARENA_SEGMENT_SIZE) + 1
        let (data, segment) = allocate(length)
        var place = fls_arena_place()
        XCTAssertEqual(fls_arena_place_of(data, segment, &place), 0)
        XCTAssertEqual(place.offset, 0)
        XCTAssertEqual(place.span, UInt64(Int(FLS_ARENA_SEGMENT_SIZE) + 2 * Self.mib))
        XCTAssertGreaterThan(place.inode, 0)
        (data + length - 1).storeBytes(of: 9, as: UInt8.self)  // its last byte is there
        fls_arena_free(data, length, segment)
        fls_arena_trim()
    }

    func testBadInputIsRefused() {
        var segment: UInt32 = 0
        XCTAssertNil(fls_arena_alloc(0, &segment))
        XCTAssertEqual(errno, EINVAL)
        var place = fls_arena_place()
        XCTAssertEqual(fls_arena_place_of(UnsafeRawPointer(bitPattern: 0x1000)!, 0, &place), EINVAL)
        XCTAssertEqual(fls_arena_place_of(UnsafeRawPointer(bitPattern: 0x1000)!, UInt32(FLS_ARENA_SEGMENTS), &place), EINVAL)
        fls_arena_free(nil, 10, 0)  // nothing happens
        fls_arena_free(UnsafeMutableRawPointer(bitPattern: 0x1000), 10, UInt32(FLS_ARENA_SEGMENTS))
    }

    /// Four threads allocate, fill, check and free ranges of many sizes, keeping a few alive:
    /// no two live ranges overlap (each still holds its own pattern when freed).
    func testThreadsShareTheArena() {
        let inUse = fls_arena_in_use()
        let threads = 4, rounds = 300
        let corrupted = UnsafeMutablePointer<Int>.allocate(capacity: threads)
        corrupted.initialize(repeating: 0, count: threads)
        defer { corrupted.deallocate() }
        let ids = (0..<threads).map { thread in
            startThread {
                var state = UInt64(thread + 1) &* 0x9E37_79B9_7F4A_7C15
                var live: [(UnsafeMutableRawPointer, UInt32, Int, UInt64)] = []
                func check(_ entry: (UnsafeMutableRawPointer, UInt32, Int, UInt64)) {
                    let words = entry.2 / 8
                    let base = entry.0.assumingMemoryBound(to: UInt64.self)
                    if base[0] != entry.3 || base[words / 2] != entry.3 || base[words - 1] != entry.3 {
                        corrupted[thread] += 1
                    }
                    fls_arena_free(entry.0, entry.2, entry.1)
                }
                for round in 0..<rounds {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    let length = 4096 + Int((state >> 33) % UInt64(2 * Self.mib))
                    var segment: UInt32 = 0
                    guard let data = fls_arena_alloc(length, &segment) else {
                        corrupted[thread] += 1
                        continue
                    }
                    let tag = UInt64(thread) << 32 | UInt64(round)
                    let words = length / 8, base = data.assumingMemoryBound(to: UInt64.self)
                    base[0] = tag
                    base[words / 2] = tag
                    base[words - 1] = tag
                    live.append((data, segment, length, tag))
                    if live.count > 4 { check(live.remove(at: Int(state >> 40) % live.count)) }
                }
                for entry in live { check(entry) }
            }
        }
        for id in ids { OSThread.join(id) }
        XCTAssertEqual((0..<threads).map { corrupted[$0] }, Array(repeating: 0, count: threads))
        XCTAssertEqual(fls_arena_in_use(), inUse)
        fls_arena_trim()
    }
}

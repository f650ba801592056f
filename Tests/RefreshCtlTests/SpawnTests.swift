import Foundation
import Glibc
import TestSupport
import Testing

@Suite struct SpawnTests {
    /// A child of the tests gets standard input, output and error and nothing else of the test
    /// process (else a long-lived child keeps another test's script open: ETXTBSY on its exec).
    @Test func childrenInheritNoOtherDescriptor() throws {
        // A descriptor without close-on-exec, as Foundation leaves some.
        let leaky = open("/dev/null", O_RDONLY)
        defer { close(leaky) }
        #expect(leaky > 2)
        let listing = try spawnAndWait("/bin/sh", ["-c", "ls /proc/$$/fd"])
        #expect(listing.stdout.split(separator: "\n").sorted() == ["0", "1", "2"], "\(listing.stdout)")
    }
}

/// refreshd's version, shared by both tools: the `VERSION` file at the repository's root says it
/// first; a test holds this constant equal to it.
public enum RefreshdVersion {
    public static let current = "0.1.0"
}

import FakeSendGrid
import Foundation
import RefreshDaemon
import RefreshWire
import Testing

/// A small subset of JSON Schema (type, required, properties, items, $ref, minLength, maxLength,
/// format uuid): enough for SendGrid's Segments 2.0 description.
struct SchemaValidator {
    let document: [String: Any]

    init(path: String = "Fixtures/sendgrid-segments-2.0.openapi.json") throws {
        var root = URL(fileURLWithPath: #filePath)
        root.deleteLastPathComponent()
        let data = try Data(
            contentsOf: path.hasPrefix("/") ? URL(fileURLWithPath: path) : root.appendingPathComponent(path))
        document = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The schema of a component by name.
    func component(_ name: String) -> [String: Any] { resolve(["$ref": "#/components/schemas/\(name)"]) }

    func resolve(_ schema: [String: Any]) -> [String: Any] {
        guard let ref = schema["$ref"] as? String else { return schema }
        var node: Any = document
        for part in ref.dropFirst(2).split(separator: "/") { node = (node as! [String: Any])[String(part)]! }
        return resolve(node as! [String: Any])
    }

    /// The fields an answer carried, as "Component.field" (inline objects: "Component.field.inner").
    final class Coverage {
        var seen: Set<String> = []
    }

    /// Problems found validating `value` against `schema` (empty: valid). `strict`: a field the
    /// schema does not name is a problem even where the document allows more (the daemon must
    /// document everything it sends); `coverage` collects the documented fields seen.
    func problems(
        _ value: Any, _ schema: [String: Any], at path: String = "$", strict: Bool = false, coverage: Coverage? = nil,
        name: String? = nil
    ) -> [String] {
        var name = name
        if let ref = schema["$ref"] as? String { name = ref.split(separator: "/").last.map(String.init) }
        let schema = resolve(schema)
        var found: [String] = []
        if let branches = schema["oneOf"] as? [[String: Any]] {
            let matching = branches.first { problems(value, $0, at: path, strict: strict).isEmpty }
            guard let matching else { return ["\(path): matches no branch of oneOf"] }
            return problems(value, matching, at: path, strict: strict, coverage: coverage, name: name)
        }
        if let options = schema["enum"] as? [Any], let text = value as? String,
            !options.contains(where: { ($0 as? String) == text })
        {
            return ["\(path): \"\(text)\" is not one of \(options)"]
        }
        switch schema["type"] as? String {
        case "null":
            guard value is NSNull else { return ["\(path): expected null"] }
        case "object":
            guard let object = value as? [String: Any] else { return ["\(path): expected an object"] }
            for key in schema["required"] as? [String] ?? [] where object[key] == nil {
                found.append("\(path).\(key): required")
            }
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for (key, child) in object {
                if let childSchema = properties[key] as? [String: Any] {
                    if let name { coverage?.seen.insert("\(name).\(key)") }
                    found += problems(
                        child, childSchema, at: "\(path).\(key)", strict: strict, coverage: coverage,
                        name: name.map { "\($0).\(key)" })
                } else if let extra = schema["additionalProperties"] as? [String: Any] {
                    found += problems(child, extra, at: "\(path).\(key)", strict: strict, coverage: coverage)
                } else if schema["additionalProperties"] as? Bool == false || strict {
                    found.append("\(path).\(key): not allowed")
                }
            }
        case "array":
            guard let array = value as? [Any] else { return ["\(path): expected an array"] }
            if let items = schema["items"] as? [String: Any] {
                for (index, item) in array.enumerated() {
                    found += problems(
                        item, items, at: "\(path)[\(index)]", strict: strict, coverage: coverage, name: name)
                }
            }
        case "string":
            guard let string = value as? String else { return ["\(path): expected a string"] }
            if let min = schema["minLength"] as? Int, string.count < min {
                found.append("\(path): shorter than \(min)")
            }
            if let max = schema["maxLength"] as? Int, string.count > max { found.append("\(path): longer than \(max)") }
            if schema["format"] as? String == "uuid", UUID(uuidString: string) == nil {
                found.append("\(path): not a uuid")
            }
        case "integer":
            guard let number = value as? NSNumber, number.doubleValue == number.doubleValue.rounded() else {
                return ["\(path): expected an integer"]
            }
        case "boolean":
            guard value is Bool || (value as? String).map({ ["true", "false"].contains($0) }) == true else {
                return ["\(path): expected a boolean"]
            }
        default: break
        }
        return found
    }

    func operation(_ path: String, _ method: String) -> [String: Any] {
        ((document["paths"] as! [String: Any])[path] as! [String: Any])[method] as! [String: Any]
    }
}

@Suite("SendGrid's OpenAPI description, as data")
struct SendGridContractTests {
    /// The refresh and the pre-flight read refreshd sends match SendGrid's own description, and
    /// the fake SendGrid's answers match it too (so tests exercise the real shapes).
    @Test func requestsAndAnswersMatchTheDescription() async throws {
        let schema = try SchemaValidator()
        let h = try await DispatchHarness(start: simStart)
        let segment = segmentID(3)
        try await h.enqueue(segment, zone: "America/Chicago")
        _ = await h.lane.step()
        await h.shutdown()

        let refresh = schema.operation("/v3/marketing/segments/2.0/refresh/{segment_id}", "post")
        let post = try #require(h.fake.requests.first { $0.method == "POST" })
        let pathParameter = (refresh["parameters"] as! [[String: Any]]).first { $0["name"] as? String == "segment_id" }!
        let id = String(post.uri.split(separator: "/").last!)
        #expect(schema.problems(id, pathParameter["schema"] as! [String: Any]).isEmpty)
        let bodySchema =
            ((schema.resolve(refresh["requestBody"] as! [String: Any])["content"] as! [String: Any])["application/json"]
            as! [String: Any])["schema"] as! [String: Any]
        let body = try JSONSerialization.jsonObject(with: Data(post.body.utf8))
        #expect(schema.problems(body, bodySchema).isEmpty)
        #expect(
            schema.problems([String: Any](), bodySchema) == ["$.user_time_zone: required"],
            "the validator itself must catch a missing field")

        let read = schema.operation("/v3/marketing/segments/2.0/{segment_id}", "get")
        let get = try #require(h.fake.requests.first { $0.method == "GET" })
        let query = (read["parameters"] as! [[String: Any]]).first { $0["name"] as? String == "contacts_sample" }!
        #expect(
            get.uri.hasSuffix("?contacts_sample=false")
                && schema.problems("false", query["schema"] as! [String: Any]).isEmpty)

        // The fake's answers: 202, the segment read, 404.
        let accepted =
            (((refresh["responses"] as! [String: Any])["202"] as! [String: Any])["content"] as! [String: Any])[
                "application/json"] as! [String: Any]
        let attempt = try #require(try await h.attempts().first)
        #expect(schema.problems(["job_id": attempt.sendGridJobID!], accepted["schema"] as! [String: Any]).isEmpty)
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let client = SendGridClient(baseURL: url, requestTimeoutSeconds: 2, connectTimeoutSeconds: 1, version: "test")
        let reading = try await client.readSegment(segment: segment, key: APIKey(fakeKey), onBehalfOf: nil).get()
        #expect(reading.refreshesUsed == 0 && reading.maxRefreshes == 2)
        let segmentRead = fake.answer(method: "GET", uri: "/v3/marketing/segments/2.0/\(segment)?contacts_sample=false")
        let readSchema =
            (((read["responses"] as! [String: Any])["200"] as! [String: Any])["content"] as! [String: Any])[
                "application/json"] as! [String: Any]
        let readBody = try JSONSerialization.jsonObject(with: Data(segmentRead.body.utf8))
        #expect(
            segmentRead.status == 200 && schema.problems(readBody, readSchema["schema"] as! [String: Any]).isEmpty,
            "\(schema.problems(readBody, readSchema["schema"] as! [String: Any]))")
        fake.forget(segment: segment)
        let missing = fake.answer(
            method: "POST", uri: "/v3/marketing/segments/2.0/refresh/\(segment)", body: #"{"user_time_zone":"UTC"}"#)
        let notFound =
            (((refresh["responses"] as! [String: Any])["404"] as! [String: Any])["content"] as! [String: Any])[
                "application/json"] as! [String: Any]
        let missingBody = try JSONSerialization.jsonObject(with: Data(missing.body.utf8))
        #expect(missing.status == 404 && schema.problems(missingBody, notFound["schema"] as! [String: Any]).isEmpty)
        await client.shutdown()
        await fake.stop()
    }
}

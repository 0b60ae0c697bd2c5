// Package agentd holds the domain of the agentd runtime: the small binding
// interfaces every backend implements (KV, Blob, DB, Model), the types that
// cross them, the limits they enforce, and the error kinds every layer
// classifies its failures into.
//
// It imports nothing of agentd's own and no backend or SDK: backends live
// under store/ and model/, named after the dependency they wrap.
package agentd

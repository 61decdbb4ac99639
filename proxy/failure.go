package proxy

import (
	"errors"
	"reflect"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// upstreamError marks a failure to reach or hear from an upstream broker, as
// opposed to a bad client request. The client is then answered with a
// retriable error instead of being disconnected: clients (franz-go, for one)
// treat a connection the "broker" closes right after a request as fatal.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

func asUpstreamError(err error) error {
	if err == nil {
		return nil
	}
	var ue *upstreamError
	if errors.As(err, &ue) {
		return err
	}
	return &upstreamError{err}
}

func isUpstreamError(err error) bool {
	var ue *upstreamError
	return errors.As(err, &ue)
}

// retriableCodes is the error each API answers when its upstream broker is
// unreachable: partition requests say the leader moved (the client refreshes
// metadata and retries), coordinator requests say the coordinator is not
// available (the client looks it up again).
var retriableCodes = map[int16]int16{
	0: kerr.NotLeaderForPartition.Code, 1: kerr.NotLeaderForPartition.Code, 2: kerr.NotLeaderForPartition.Code,
	21: kerr.NotLeaderForPartition.Code, 23: kerr.NotLeaderForPartition.Code, 61: kerr.NotLeaderForPartition.Code,
	8: kerr.CoordinatorNotAvailable.Code, 9: kerr.CoordinatorNotAvailable.Code, 11: kerr.CoordinatorNotAvailable.Code,
	12: kerr.CoordinatorNotAvailable.Code, 13: kerr.CoordinatorNotAvailable.Code, 14: kerr.CoordinatorNotAvailable.Code,
	22: kerr.CoordinatorNotAvailable.Code, 24: kerr.CoordinatorNotAvailable.Code, 25: kerr.CoordinatorNotAvailable.Code,
	26: kerr.CoordinatorNotAvailable.Code, 28: kerr.CoordinatorNotAvailable.Code, 47: kerr.CoordinatorNotAvailable.Code,
	68: kerr.CoordinatorNotAvailable.Code,
	3:  kerr.LeaderNotAvailable.Code, // per requested topic
}

// retriableResponse builds the answer to r that reports code everywhere an
// error can be reported, shaped after the request (same topics, partitions,
// groups). It returns false for APIs without such an answer; the connection
// is then closed.
func retriableResponse(r *protocol.Request) ([]byte, bool) {
	code, ok := retriableCodes[r.APIKey]
	if !ok {
		return nil, false
	}
	return errorResponse(r, code)
}

// errorResponse builds the answer to r with code in every error slot.
func errorResponse(r *protocol.Request, code int16) ([]byte, bool) {
	req := kmsg.RequestForKey(r.APIKey)
	req.SetVersion(r.APIVersion)
	if err := req.ReadFrom(r.Body); err != nil {
		return nil, false
	}
	if md, ok := req.(*kmsg.MetadataRequest); ok && md.Topics == nil {
		return nil, false // "all topics" cannot be answered without upstream
	}
	resp := req.ResponseKind()
	resp.SetVersion(r.APIVersion)
	if d, ok := resp.(interface{ Default() }); ok {
		d.Default()
	}
	mirrorShape(reflect.ValueOf(req).Elem(), reflect.ValueOf(resp).Elem(), code)
	return resp.AppendTo(nil), true
}

// mirrorShape copies the identifying fields (Topic, TopicID, Partition,
// Group) of req into resp, recursing into lists of the same name, and sets
// every ErrorCode to code. kmsg names request and response fields alike,
// which is what makes one walker serve every API.
func mirrorShape(req, resp reflect.Value, code int16) {
	if f := resp.FieldByName("ErrorCode"); f.IsValid() && f.Kind() == reflect.Int16 {
		f.SetInt(int64(code))
	}
	for i := 0; i < resp.NumField(); i++ {
		name := resp.Type().Field(i).Name
		dst := resp.Field(i)
		src := req.FieldByName(name)
		if !src.IsValid() {
			continue
		}
		switch {
		case name == "Topic" || name == "TopicID" || name == "Partition" || name == "Group":
			if src.Type() == dst.Type() {
				dst.Set(src)
			}
		case dst.Kind() == reflect.Slice && src.Kind() == reflect.Slice && dst.Type().Elem().Kind() == reflect.Struct:
			out := reflect.MakeSlice(dst.Type(), src.Len(), src.Len())
			for j := 0; j < src.Len(); j++ {
				el := out.Index(j)
				if d, ok := el.Addr().Interface().(interface{ Default() }); ok {
					d.Default()
				}
				switch s := src.Index(j); s.Kind() {
				case reflect.Struct:
					mirrorShape(s, el, code)
				case reflect.Int32: // partitions given as bare ids
					if p := el.FieldByName("Partition"); p.IsValid() {
						p.SetInt(s.Int())
					}
					if f := el.FieldByName("ErrorCode"); f.IsValid() {
						f.SetInt(int64(code))
					}
				}
			}
			dst.Set(out)
		}
	}
}
